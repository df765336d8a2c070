"""The experiment configuration shared by every file in ``configs/``.

Each ``configs/<name>.py`` calls ``base_config()`` and overrides what its experiment needs, so every run has the same
top-level fields: ``seed``, ``steps`` (T), ``decision_interval`` (K), ``batch_size`` and the ``data``, ``model``,
``optimizer`` and ``agent`` sub-configs. The returned ``ConfigDict`` is locked: overriding a field that does not
exist (``--config.stpes=10``) is an error that names the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import ml_collections
import numpy as np


class ConfigError(ValueError):
    """A configuration that cannot run (unknown field, bad value)."""


# Agent-training presets (docs/agent_training.md): every config file takes one as its config string,
# ``--config=configs/<name>.py:paper``. 'paper' is Algorithm 1 and App. D as written (one environment per update);
# 'grouped' adds what the proxy ablation (docs/results/proxy_fashion_mnist_mlp.md) found to help, and deploys from
# the prior's centre instead of §4.3's search of initial learning rates (item 30 there).
AGENT_PRESETS = {
    "paper": {"num_envs": 1, "group_size": 1, "reward_scale": 1.0, "progress_feature": False, "mean_features": True,
              "lr_max": 1.0, "deploy_selection": "value", "deploy_candidates": 5},
    "grouped": {"num_envs": 2, "group_size": 2, "reward_scale": 100.0, "progress_feature": True,
                "mean_features": False, "lr_max": 0.1, "deploy_selection": "metric", "deploy_candidates": 1},
}
DEFAULT_AGENT_PRESET = "grouped"


def apply_agent_preset(config: ml_collections.ConfigDict, name: str = "") -> ml_collections.ConfigDict:
    """Set the fields of ``AGENT_PRESETS[name]`` ('' = ``DEFAULT_AGENT_PRESET``) in ``config.agent``."""
    name = name or DEFAULT_AGENT_PRESET
    if name not in AGENT_PRESETS:
        raise ConfigError(f"unknown agent preset {name!r}; choose one of {sorted(AGENT_PRESETS)} (configs/X.py:NAME)")
    for field, value in AGENT_PRESETS[name].items():
        config.agent[field] = value
    return config


def base_config(agent_preset: str = "") -> ml_collections.ConfigDict:
    """The shared fields; ``agent_preset`` picks the agent-training preset ('' = the default, 'paper')."""
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
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters and optimizer state stay float32)

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
    apply_agent_preset(c, agent_preset)
    c.agent_checkpoint = ""  # apply: a checkpoint written by train_agent (its results.json names it)
    return c


def agent_config() -> ml_collections.ConfigDict:
    """The scheduler agent: encoder, heads, PPO (App. D) and the environment's priors."""
    a = ml_collections.ConfigDict()
    a.episodes = 30  # agent-training episodes (§5.1: 30 for the image tasks)
    a.num_envs = 1  # environments per device, run side by side with vmap (one PPO update on all of them)
    a.env_batching = "auto"  # the environments of a device in one program: vmap | loop | auto (loop on a CPU and
    #                          for conv nets, whose vmapped convolutions are slow; vmap for dense nets on a GPU/TPU)
    a.num_devices = 1  # local devices the environment axis is split over, one program (0 = all; gns_jax.parallel)
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
    a.collapse_loss_ratio = 0.0  # > 0: a training loss above this multiple of the first K steps' counts as a divergence
    a.collapse_below_start = False  # a validated metric below that after the first K steps counts as a divergence
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
    # Beyond the paper (docs/agent_training.md). The values here are the paper's; base_config then applies the
    # agent preset (AGENT_PRESETS), which sets these, num_envs, lr_max, deploy_selection and deploy_candidates.
    a.group_size = 1  # environments per group sharing target init, data order and initial LR (common random
    #                   numbers); > 1 also centres the advantages within each group at every decision (1 = paper)
    a.reward_scale = 1.0  # rewards are multiplied by this before PPO (100 = accuracy points); logs stay unscaled
    a.progress_feature = False  # append the run progress t / (N - 1) as a global node feature
    a.mean_features = True  # the weight/bias mean features of §4.1 (False zeroes them: they flip sign step to step)
    a.obs_norm = False  # standardize the node features by running statistics saved with the agent (gns_jax.obs_norm)
    a.probe = True  # log the policy's mean action on a fixed probe set after every update (spread, slope)
    a.max_grad_norm = 0.5
    a.target_kl = 0.0  # PPO early stop: skip an update's remaining steps once KL > 1.5 x this (0 = off, the paper)
    a.critic_warmup_updates = 0  # PPO updates at the start that train the critic alone (actor, encoder frozen)
    a.init_checkpoint = ""  # start from this agent checkpoint (transfer, §5.4)
    a.deploy_candidates = 5  # apply: initial learning rates tried (§4.3); 1 = start at the prior's geometric centre
    a.deploy_pre_decisions = 2  # apply: decision intervals run before V(s) picks the initial LR (T_pre / K)
    a.deploy_selection = "value"  # apply: pick the initial LR by V(s_{T_pre}) (§4.3) | 'metric' (validation at T_pre)
    return a


# Table 8: batch size, T and K of each GLUE task.
GLUE_SETTINGS = {
    "cola": (16, 2680, 10), "sst2": (32, 10525, 100), "mrpc": (32, 575, 10), "qqp": (32, 56855, 1000),
    "stsb": (16, 1800, 10), "mnli": (32, 61360, 1000), "qnli": (32, 16370, 100), "rte": (16, 1560, 10),
}


def glue_config(task: str, agent_preset: str = "") -> ml_collections.ConfigDict:
    """GLUE fine-tuning with the paper's settings (Table 8): AdamW, weight decay 0.1, per-task batch, T and K."""
    batch, steps, k = GLUE_SETTINGS[task]
    c = base_config(agent_preset)
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


def glue_config_from_string(task_and_preset: str) -> ml_collections.ConfigDict:
    """``glue_config`` from the config string of ``configs/glue.py``: ``task`` or ``task,agent_preset``."""
    task, _, preset = task_and_preset.strip().partition(",")
    if task not in GLUE_SETTINGS:
        raise ConfigError(f"configs/glue.py needs a GLUE task as its config string, e.g. --config=configs/glue.py:rte "
                          f"(or :rte,paper for the paper's agent); got {task_and_preset!r}, choose one of "
                          f"{', '.join(GLUE_SETTINGS)}")
    return glue_config(task, preset.strip())


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A JSON-serializable copy of a config (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


# ---- validation ------------------------------------------------------------------------------------------------
# Every field of every config is checked here, before any work starts, from one table: its type, its range or
# choices, which modes read it, and whether a resumed run must keep it (``resume=True``: part of the settings
# fingerprint, see ``settings_fingerprint``) or may change it (run length, checkpoint cadence, caches, speed knobs).
MODES = ("gns", "train_target", "describe_graph", "train_agent", "apply", "quickstart", "compare", "report")
TARGET_MODES = ("gns", "train_target", "train_agent", "apply", "quickstart", "compare")  # build the target task
GRAPH_MODES = TARGET_MODES + ("describe_graph",)  # build the target model
ENV_BATCHING = ("auto", "vmap", "loop")
AGENT_MODES = ("gns", "train_agent", "quickstart", "compare")  # train an agent
DEPLOY_MODES = ("gns", "apply", "quickstart", "compare")  # deploy an agent
POLICY_MODES = AGENT_MODES + ("apply",)  # build an agent
COMPARE_MODES = ("compare", "report")
SCHEDULE_MODES = ("train_target", "quickstart")  # run the fixed schedule of config.optimizer

IMAGE_DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100")
DATA_NAMES = IMAGE_DATASETS + tuple(f"glue/{t}" for t in GLUE_SETTINGS)
COMPARE_METHODS = ("constant", "polynomial", "cosine", "cmaes", "adam_hd", "sgd_hd", "schedule_free_adamw",
                   "prodigy", "dadapt_adamw", "mechanize", "gns", "frs", "css", "srls")


@dataclasses.dataclass(frozen=True)
class Field:
    """One row of the validation table.

    ``kind`` is ``int``, ``float``, ``bool``, ``str``, ``"ints"`` (a non-empty tuple of ints), ``"floats"`` (a
    tuple of floats, maybe empty) or ``"strs"``. ``interval`` is a range such as ``"[1, inf)"`` or ``"(0, 1]"``
    (for tuples: of every entry); ``choices`` the allowed values (for tuples: of every entry); ``directory``: a
    non-empty value must be an existing directory.
    """

    path: str
    kind: Any
    modes: tuple[str, ...]
    interval: str = ""
    choices: tuple = ()
    resume: bool = True
    directory: bool = False


def _f(path, kind, modes, interval="", choices=(), resume=True, directory=False) -> Field:
    return Field(path, kind, tuple(modes), interval, tuple(choices), resume, directory)


ALL = MODES
MODEL_DTYPES = ("float32", "bfloat16")
FIELDS: tuple[Field, ...] = (
    _f("seed", int, TARGET_MODES, "[0, 4294967295]"),
    _f("steps", int, GRAPH_MODES + ("report",), "[1, inf)"),
    _f("decision_interval", int, TARGET_MODES + ("report",), "[1, inf)"),
    _f("batch_size", int, TARGET_MODES + ("report",), "[1, inf)"),
    _f("eval_batch_size", int, TARGET_MODES, "[1, inf)", resume=False),
    _f("scan_unroll", int, TARGET_MODES, "[1, inf)", resume=False),
    _f("data.name", str, GRAPH_MODES + ("report",), choices=DATA_NAMES),
    _f("data.source", str, TARGET_MODES, choices=("auto", "tfds", "local", "debian", "tsv")),
    _f("data.data_dir", str, TARGET_MODES, directory=True),
    _f("data.tfds_data_dir", str, TARGET_MODES, directory=True),
    _f("data.cache_dir", str, TARGET_MODES, resume=False),
    _f("data.val_size", int, TARGET_MODES + ("report",), "[1, inf)"),
    _f("data.split_seed", int, TARGET_MODES, "[0, 4294967295]"),
    _f("data.train_limit", int, TARGET_MODES, "[0, inf)"),
    _f("data.tokenizer_dir", str, TARGET_MODES, directory=True),
    _f("data.max_length", int, GRAPH_MODES, "[2, inf)"),
    _f("model.name", str, GRAPH_MODES + ("report",), choices=("mlp", "resnet", "vgg", "transformer")),
    _f("model.depth", int, GRAPH_MODES + ("report",), choices=(18, 34)),
    _f("model.width", float, GRAPH_MODES + ("report",), "(0, inf)"),
    _f("model.hidden", "ints", GRAPH_MODES + ("report",), "[1, inf)"),
    _f("model.checkpoint", str, GRAPH_MODES, directory=True),
    _f("model.size", str, GRAPH_MODES, choices=("any", "base", "large")),
    _f("model.dropout", float, GRAPH_MODES, "[0, 1)"),
    _f("model.dtype", str, GRAPH_MODES, choices=MODEL_DTYPES),
    _f("optimizer.name", str, TARGET_MODES + ("report",), choices=("adam", "adamw", "sgd")),
    _f("optimizer.learning_rate", float, TARGET_MODES, "(0, inf)"),
    _f("optimizer.weight_decay", float, TARGET_MODES, "[0, inf)"),
    _f("optimizer.momentum", float, TARGET_MODES, "[0, 1)"),
    _f("optimizer.schedule", str, SCHEDULE_MODES, choices=("constant", "cosine", "polynomial")),
    _f("optimizer.mu", float, SCHEDULE_MODES, "[0, 1]"),
    _f("optimizer.eta1", float, SCHEDULE_MODES, "[0, 1]"),
    _f("optimizer.eta2", float, SCHEDULE_MODES, "[0, 1]"),
    _f("optimizer.power", float, SCHEDULE_MODES, "(0, inf)"),
    _f("agent.episodes", int, AGENT_MODES + ("report",), "[1, inf)", resume=False),
    _f("agent.num_envs", int, AGENT_MODES, "[1, inf)"),
    _f("agent.num_devices", int, AGENT_MODES, "[0, inf)"),
    _f("agent.env_batching", str, POLICY_MODES, choices=ENV_BATCHING, resume=False),
    _f("agent.truncated_episodes", int, AGENT_MODES, "[0, inf)"),
    _f("agent.truncated_fraction", float, AGENT_MODES, "(0, 1]"),
    _f("agent.val_subsample", int, AGENT_MODES, "[0, inf)"),
    _f("agent.checkpoint_every", int, AGENT_MODES, "[1, inf)", resume=False),
    _f("agent.keep_checkpoints", int, AGENT_MODES, "[0, inf)", resume=False),
    _f("agent.validation_prob", float, AGENT_MODES + ("report",), "[0, 1]"),
    _f("agent.prior_lr_min", float, POLICY_MODES, "(0, inf)"),
    _f("agent.prior_lr_max", float, POLICY_MODES, "(0, inf)"),
    _f("agent.lr_min", float, POLICY_MODES, "(0, inf)"),
    _f("agent.lr_max", float, POLICY_MODES, "(0, inf)"),
    _f("agent.divergence_penalty", float, AGENT_MODES, "(-inf, 0]"),
    _f("agent.collapse_loss_ratio", float, AGENT_MODES, "[0, inf)"),
    _f("agent.collapse_below_start", bool, AGENT_MODES),
    _f("agent.encoder", str, POLICY_MODES, choices=("gcn", "gat", "css", "srls")),
    _f("agent.encoder_hidden", int, POLICY_MODES, "[1, inf)"),
    _f("agent.encoder_layers", int, POLICY_MODES, "[1, inf)"),
    _f("agent.head_hidden", int, POLICY_MODES, "[1, inf)"),
    _f("agent.action_scale", float, POLICY_MODES, "(0, 1)"),
    _f("agent.sigma", float, POLICY_MODES, "(0, inf)"),
    _f("agent.gamma", float, AGENT_MODES, "[0, 1]"),
    _f("agent.gae_lambda", float, AGENT_MODES, "[0, 1]"),
    _f("agent.clip_eps", float, AGENT_MODES, "(0, inf)"),
    _f("agent.ent_coef", float, AGENT_MODES, "[0, inf)"),
    _f("agent.vf_coef", float, AGENT_MODES, "[0, inf)"),
    _f("agent.actor_lr", float, AGENT_MODES, "(0, inf)"),
    _f("agent.critic_lr", float, AGENT_MODES, "(0, inf)"),
    _f("agent.ppo_epochs", int, AGENT_MODES, "[1, inf)"),
    _f("agent.num_minibatches", int, AGENT_MODES, "[1, inf)"),
    _f("agent.center_advantages", bool, AGENT_MODES),
    _f("agent.group_size", int, AGENT_MODES, "[1, inf)"),
    _f("agent.reward_scale", float, AGENT_MODES, "(0, inf)"),
    _f("agent.progress_feature", bool, POLICY_MODES),
    _f("agent.mean_features", bool, POLICY_MODES),
    _f("agent.obs_norm", bool, POLICY_MODES),
    _f("agent.probe", bool, AGENT_MODES, resume=False),
    _f("agent.max_grad_norm", float, AGENT_MODES, "(0, inf)"),
    _f("agent.target_kl", float, AGENT_MODES, "[0, inf)"),
    _f("agent.critic_warmup_updates", int, AGENT_MODES, "[0, inf)"),
    _f("agent.init_checkpoint", str, AGENT_MODES, directory=True),
    _f("agent.deploy_candidates", int, DEPLOY_MODES, "[1, inf)"),
    _f("agent.deploy_pre_decisions", int, DEPLOY_MODES, "[1, inf)"),
    _f("agent.deploy_selection", str, DEPLOY_MODES, choices=("value", "metric"), resume=False),
    _f("agent_checkpoint", str, ("apply",), directory=True),
    # config.compare (compare configs only); the grid and method list may grow between calls (results are cached).
    _f("compare.methods", "strs", COMPARE_MODES, choices=COMPARE_METHODS, resume=False),
    _f("compare.num_seeds", int, COMPARE_MODES, "[1, inf)", resume=False),
    _f("compare.tune_seed", int, ("compare",), "[0, 4294967295]"),
    _f("compare.agent_seed", int, ("compare",), "[0, 4294967295]", resume=False),
    _f("compare.agent_episodes", int, ("compare", "report"), "[0, inf)", resume=False),
    _f("compare.agent_selection", str, ("compare", "report"), choices=("last", "best_val"), resume=False),
    _f("compare.space.alpha_max", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.space.mu", "floats", ("compare",), "[0, 1]", resume=False),
    _f("compare.space.eta1", "floats", ("compare",), "[0, 1]", resume=False),
    _f("compare.space.eta2", "floats", ("compare",), "[0, 1]", resume=False),
    _f("compare.space.power", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.hd.alpha0", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.hd.beta", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.hd.sgd_momentum", float, ("compare",), "[0, 1)", resume=False),
    _f("compare.cma.alpha_max", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.cma.mu", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.cma.eta1", "floats", ("compare",), "[0, 1]", resume=False),
    _f("compare.cma.eta2", "floats", ("compare",), "[0, 1]", resume=False),
    _f("compare.cma.evaluations", int, ("compare",), "[1, inf)", resume=False),
    _f("compare.cma.seed", int, ("compare",), "[0, 4294967295]", resume=False),
    _f("compare.cma.sigma0", float, ("compare",), "(0, inf)", resume=False),
    _f("compare.cma.popsize", int, ("compare",), "[0, inf)", resume=False),
    _f("compare.lr_free.schedule_free_adamw", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.lr_free.prodigy", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.lr_free.dadapt_adamw", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.lr_free.mechanize", "floats", ("compare",), "(0, inf)", resume=False),
    _f("compare.reference", str, ("report",), choices=("", "table20"), resume=False),
    _f("compare.report_dir", str, ("report",), resume=False),
    _f("compare.report_name", str, ("report",), resume=False),
)
FIELD_BY_PATH = {f.path: f for f in FIELDS}


def _interval(text: str) -> tuple[float, float, bool, bool]:
    """``"[1, inf)"`` -> (1, inf, closed at 1, open at inf)."""
    low, high = (float(x) for x in text[1:-1].split(","))
    return low, high, text[0] == "[", text[-1] == "]"


def _in_interval(value: float, text: str) -> bool:
    low, high, low_closed, high_closed = _interval(text)
    return (value >= low if low_closed else value > low) and (value <= high if high_closed else value < high)


def _get(config: ml_collections.ConfigDict, path: str):
    node = config
    for part in path.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_number(x) -> bool:
    return (_is_int(x) or isinstance(x, (float, np.floating))) and math.isfinite(float(x))


def check_field(spec: Field, value) -> str | None:
    """The problem with ``value`` for ``spec`` (one line), or None when it is fine."""
    name = f"config.{spec.path}"
    if spec.kind in ("ints", "floats", "strs"):
        if isinstance(value, str) or not isinstance(value, (tuple, list)):
            return f"{name} must be a tuple, e.g. (1, 2), got {value!r}"
        entry_ok = {"ints": _is_int, "floats": _is_number, "strs": lambda x: isinstance(x, str)}[spec.kind]
        if spec.kind == "ints" and not value:
            return f"{name} must not be empty"
        for x in value:
            if not entry_ok(x):
                what = {"ints": "integers", "floats": "finite numbers", "strs": "strings"}[spec.kind]
                return f"{name} must hold {what}, got {value!r}"
            if spec.interval and not _in_interval(float(x), spec.interval):
                return f"{name}: every entry must be in {spec.interval}, got {value!r}"
            if spec.choices and x not in spec.choices:
                return f"{name}: unknown entry {x!r}; choose from {', '.join(map(str, spec.choices))}"
        return None
    if spec.kind is bool:
        ok = isinstance(value, (bool, np.bool_))
    elif spec.kind is int:
        ok = _is_int(value)
    elif spec.kind is float:
        ok = _is_number(value) or (_is_int(value))
    else:
        ok = isinstance(value, str)
    if not ok:
        return f"{name} must be {_KIND_NAMES[spec.kind]}, got {value!r}"
    if spec.kind is float and not math.isfinite(float(value)):
        return f"{name} must be a finite number, got {value!r}"
    if spec.interval and not _in_interval(float(value), spec.interval):
        return f"{name} must be in {spec.interval}, got {value!r}"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(repr(c) for c in spec.choices)}, got {value!r}"
    if spec.directory and value and not os.path.isdir(os.path.expanduser(value)):
        found = "a file" if os.path.exists(value) else "nothing"
        return f"{name} {value!r} is not a directory ({found} there)"
    return None


_KIND_NAMES = {int: "an integer", float: "a number", bool: "True or False", str: "a string"}


def _cross_checks(config: ml_collections.ConfigDict, mode: str | None) -> str | None:
    """Rules that involve several fields."""
    a, o = config.agent, config.optimizer
    if a.prior_lr_min > a.prior_lr_max:
        return f"config.agent.prior_lr_min ({a.prior_lr_min}) must be <= agent.prior_lr_max ({a.prior_lr_max})"
    if a.lr_min > a.lr_max:
        return f"config.agent.lr_min ({a.lr_min}) must be <= agent.lr_max ({a.lr_max})"
    if o.eta1 > o.eta2:
        return f"config.optimizer.eta1 ({o.eta1}) must be <= optimizer.eta2 ({o.eta2})"
    if "group_size" in a and a.num_envs % a.group_size:
        return f"config.agent.group_size ({a.group_size}) must divide agent.num_envs ({a.num_envs})"
    if mode in AGENT_MODES + ("apply",) and config.steps // config.decision_interval < 2:
        return (f"an episode needs at least 2 decision points: config.steps ({config.steps}) must be >= 2 * "
                f"config.decision_interval ({config.decision_interval})")
    if mode == "apply" and not config.agent_checkpoint:
        return "apply needs --config.agent_checkpoint=PATH (the agent_checkpoint of a train_agent results.json)"
    return None


def validate_config(config, mode: str | None = None) -> None:
    """Raise ``ConfigError`` (one line) for the first value no run can use; nothing else happens before this.

    Every field of the table that the config has is checked (whatever the mode: a bad value is a mistake even where
    this mode ignores it); fields missing from a config (e.g. ``compare`` outside compare configs) are skipped.
    """
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"the config must be an ml_collections.ConfigDict, got {type(config).__name__}")
    for spec in FIELDS:
        value = _get(config, spec.path)
        if value is _MISSING:
            continue
        problem = check_field(spec, value)
        if problem and spec.directory and spec.path.startswith("data."):
            problem += f"; it should hold {_get(config, 'data.name')}"
        if problem:
            raise ConfigError(problem)
    problem = _cross_checks(config, mode)
    if problem:
        raise ConfigError(problem)


def with_added_defaults(stored: dict, current: dict, defaults: dict) -> dict:
    """``stored`` (settings a run recorded) with the fields of ``current`` it lacks taken from ``defaults``: fields
    added to the config after the run was recorded, which it could only have run at their defaults. A resumed run
    compares its settings with this, so it matches at the default and is refused at any other value."""
    out = dict(stored)
    for key, value in current.items():
        if key not in out and key in defaults:
            out[key] = defaults[key]
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and isinstance(defaults.get(key), dict):
            out[key] = with_added_defaults(out[key], value, defaults[key])
    return out


def settings_fingerprint(config: ml_collections.ConfigDict, mode: str) -> dict[str, Any]:
    """The settings a run of ``mode`` depends on: every field the mode reads whose table row says ``resume``.

    A workdir keeps this next to its checkpoints; a rerun whose fingerprint differs would mix two runs.
    """
    out = {}
    for spec in FIELDS:
        if mode in spec.modes and spec.resume:
            value = _get(config, spec.path)
            if value is not _MISSING:
                out[spec.path] = list(value) if isinstance(value, (tuple, list)) else value
    return json.loads(json.dumps(out, default=str))
