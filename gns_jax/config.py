"""The experiment configuration shared by every file in ``configs/``.

Each ``configs/<name>.py`` calls ``base_config()`` and overrides what its experiment needs, so every run has the same
top-level fields: ``seed``, ``steps`` (T), ``decision_interval`` (K), ``batch_size`` and the ``data``, ``model``,
``optimizer`` and ``agent`` sub-configs. The returned ``ConfigDict`` is locked: overriding a field that does not
exist (``--config.stpes=10``) is an error that names the field.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """A configuration that cannot run (unknown field, bad value)."""


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds target init, data order, validation sampling and the agent
    c.steps = 78_200  # T: optimizer steps of one target training run (Table 7)
    c.decision_interval = 500  # K: optimizer steps per decision step of the scheduler (Table 7)
    c.batch_size = 128  # training batch size (Table 7)
    c.eval_batch_size = 1000  # chunk size of the on-device evaluation
    c.scan_unroll = 1  # unroll of the K-step lax.scan; >= K unrolls it fully, which conv nets need on CPU (small K)

    c.data = ml_collections.ConfigDict()
    c.data.name = "fashion_mnist"  # fashion_mnist | mnist | cifar10 | cifar100 | glue/<task>
    c.data.source = "auto"  # auto | tfds | local | debian (see gns_jax.data for the order 'auto' tries)
    c.data.data_dir = ""  # a folder in the dataset's official file layout ('' = none)
    c.data.tfds_data_dir = ""  # TFDS data_dir ('' = TFDS default, ~/tensorflow_datasets)
    c.data.cache_dir = ""  # decoded-array cache ('' = ~/.cache/gns_jax)
    c.data.val_size = 10_000  # validation examples sampled from the official train set (§5.1)
    c.data.split_seed = 0  # seed of the train/validation split
    c.data.train_limit = 0  # keep only this many training examples (0 = all); for quick runs
    c.data.tokenizer_dir = ""  # text tasks: local Hugging Face directory with the tokenizer ('' = checkpoint)
    c.data.max_length = 128  # text tasks: static token length

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"  # mlp | resnet | vgg | transformer
    c.model.depth = 18  # ResNet depth (18 or 34)
    c.model.width = 1.0  # width multiplier on every hidden/channel count (tiny widths for tests)
    c.model.hidden = (128, 128)  # MLP hidden widths (the paper's 3-layer MLP)
    c.model.checkpoint = ""  # transformer: local Hugging Face checkpoint directory ('' = offline MiniLM package)
    c.model.size = "any"  # transformer: 'base' | 'large' checks the checkpoint is RoBERTa of that size; 'any' doesn't
    c.model.dropout = 0.1  # transformer: dropout rate

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # adam | adamw | sgd
    c.optimizer.learning_rate = 1e-3  # alpha_max of the fixed schedule; initial LR otherwise
    c.optimizer.weight_decay = 0.0  # adamw only (0.1 for GLUE, Table 8)
    c.optimizer.momentum = 0.9  # sgd only
    c.optimizer.schedule = "constant"  # train_target's fixed schedule: constant | cosine | polynomial (Eq. 7)
    c.optimizer.mu = 0.0  # alpha_min = mu * alpha_max (Eq. 7)
    c.optimizer.eta1 = 0.0  # T_warm = eta1 * T
    c.optimizer.eta2 = 1.0  # T_decay = eta2 * T
    c.optimizer.power = 1.0  # p of the polynomial schedule

    c.agent = agent_config()
    c.agent_checkpoint = ""  # apply: a checkpoint written by train_agent (its results.json names it)
    return c


def agent_config() -> ml_collections.ConfigDict:
    """The scheduler agent: encoder, heads, PPO (App. D) and the environment's priors."""
    a = ml_collections.ConfigDict()
    a.episodes = 30  # agent-training episodes (§5.1: 30 for the image tasks)
    a.num_envs = 1  # environments per device, run side by side with vmap (one PPO update on all of them)
    a.num_devices = 1  # local devices the environments are split over with pmap (0 = all); PPO gradients pmean'ed
    a.truncated_episodes = 0  # cheaper training: the first this many episodes stop early (0 = all run to T)
    a.truncated_fraction = 0.25  # ...after this fraction of T; PPO bootstraps the cut with V(s)
    a.val_subsample = 0  # Eq. 3 validation on this many examples, redrawn every episode (0 = the whole split)
    a.checkpoint_every = 1  # episodes between agent checkpoints (the last episode is always saved)
    a.keep_checkpoints = 0  # agent checkpoints kept (0 = all: compare's agent_selection='best_val' reads them)
    a.validation_prob = 0.2  # p: chance that a decision point is validated (Eq. 3)
    a.prior_lr_min = 1e-4  # D_alpha: the initial learning rate is log-uniform on [prior_lr_min, prior_lr_max]
    a.prior_lr_max = 1e-2
    a.lr_min = 1e-6  # the learning rate is clipped to [lr_min, lr_max] after every action
    a.lr_max = 1.0
    a.divergence_penalty = -1.0  # reward of an action after which the loss or the weights stop being finite
    a.encoder = "gcn"  # gcn | gat | css (Table 4) | srls (final-layer state)
    a.encoder_hidden = 64  # node-embedding width (§4.1: 64)
    a.encoder_layers = 2  # GCN layers (§4.1: 2)
    a.head_hidden = 32  # hidden width of m_f and m_s (Eq. 4)
    a.action_scale = 0.1  # mu = action_scale * tanh(m_f(h)) (Eq. 4)
    a.sigma = 0.05  # fixed standard deviation of the action distribution (Eq. 4)
    a.gamma = 0.99  # GAE discount (App. D)
    a.gae_lambda = 0.95  # GAE lambda (App. D)
    a.clip_eps = 0.2  # PPO clip (Eq. 6)
    a.ent_coef = 0.01  # entropy bonus (App. D)
    a.vf_coef = 0.5  # weight of the value loss
    a.actor_lr = 1e-3  # Adam, actor and encoder (App. D)
    a.critic_lr = 5e-3  # Adam, critic (App. D)
    a.ppo_epochs = 4  # passes over the episode's transitions per update
    a.num_minibatches = 1
    a.center_advantages = True  # subtract the batch mean of the advantages before scaling (see PPOConfig)
    a.max_grad_norm = 0.5
    a.init_checkpoint = ""  # start from this agent checkpoint (transfer, §5.4)
    a.deploy_candidates = 5  # apply: initial learning rates tried (§4.3)
    a.deploy_pre_decisions = 2  # apply: decision intervals run before V(s) picks the initial LR (T_pre / K)
    return a


# Table 8: batch size, T and K of each GLUE task.
GLUE_SETTINGS = {
    "cola": (16, 2680, 10), "sst2": (32, 10525, 100), "mrpc": (32, 575, 10), "qqp": (32, 56855, 1000),
    "stsb": (16, 1800, 10), "mnli": (32, 61360, 1000), "qnli": (32, 16370, 100), "rte": (16, 1560, 10),
}


def glue_config(task: str) -> ml_collections.ConfigDict:
    """GLUE fine-tuning with the paper's settings (Table 8): AdamW, weight decay 0.1, per-task batch, T and K."""
    batch, steps, k = GLUE_SETTINGS[task]
    c = base_config()
    c.data.name = f"glue/{task}"
    c.data.max_length = 128
    c.data.val_size = 2000  # validation: a seeded 10% of train, at most this many examples (docs/language.md)
    c.batch_size = batch
    c.steps = steps
    c.decision_interval = k
    c.eval_batch_size = 256
    c.model.name = "transformer"
    c.model.size = "base"  # RoBERTa-base (§5.3); 'large' for RoBERTa-large; 'any' for other checkpoints
    c.model.dropout = 0.1
    c.optimizer.name = "adamw"
    c.optimizer.weight_decay = 0.1  # Table 8
    c.optimizer.learning_rate = 2e-5  # alpha_max of train_target's schedule (Table 6 space: 1e-5, 2e-5)
    c.optimizer.schedule = "polynomial"  # linear decay after warmup (p = 1, Eq. 7)
    c.optimizer.eta1 = 0.06  # warmup fraction
    c.agent.prior_lr_min = 1e-5  # D_alpha for GLUE (the E.7 search range of alpha_max)
    c.agent.prior_lr_max = 1e-4
    c.agent.lr_min = 1e-7
    c.agent.lr_max = 1e-3
    c.agent.episodes = 30  # RoBERTa-base (§5.1); 10 when fine-tuning a base agent on large (§5.4)
    return c


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A JSON-serializable copy of a config (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise ``ConfigError`` (one line) for values no run can use."""
    for field in ("steps", "decision_interval", "batch_size", "eval_batch_size"):
        if int(config[field]) <= 0:
            raise ConfigError(f"config.{field} must be a positive integer, got {config[field]!r}")
    if config.optimizer.learning_rate <= 0:
        raise ConfigError(f"config.optimizer.learning_rate must be > 0, got {config.optimizer.learning_rate}")
