"""Frozen settings of the agent, its training and its deployment, built once from the config at the entry.

The ``ConfigDict`` of an experiment (``configs/``, ``gns_jax.config``) is read by the entry functions (the modes of
``gns_jax.main``, ``train_agent``, ``compare``) and turned here into hashable dataclasses; nothing below them reads
the config. The split follows what each part changes:

* ``AgentSettings``: everything the agent's compiled programs are made of — the target architecture (its graph
  structure, §4.1), the encoder and the heads (Eq. 4), the observation options, the environment (``EnvConfig``:
  K, N, the learning-rate range and prior, Eq. 2-3) and PPO (``PPOConfig``, Eq. 5-6, App. D). ``Agent`` keys its
  jitted programs on exactly this (and its task), so two agents with equal settings share compiled programs;
* ``TrainingOptions``: how Algorithm 1 is run (episodes, environments, devices, checkpoints, probe, ...); none of
  it changes a program;
* ``DeployOptions``: §4.3 deployment (candidates, T_pre, selection rule, seed and T);
* ``fixed_schedule``: the config's own Eq. 7 schedule (``train_target``, and the baseline of ``quickstart``).
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections

from gns_jax.env import EnvConfig
from gns_jax.ppo import PPOConfig
from gns_jax.schedules import Eq7Schedule


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    """The agent for one target architecture: encoder, heads, observation options, environment and PPO."""

    architecture: str  # config.model.name: the block description of the target's graph (gns_jax.graph)
    env: EnvConfig
    ppo: PPOConfig
    encoder: str = "gcn"  # gcn | gat | css | srls (Table 4)
    encoder_hidden: int = 64  # node-embedding width (§4.1)
    encoder_layers: int = 2
    head_hidden: int = 32  # hidden width of m_f and m_s (Eq. 4)
    action_scale: float = 0.1  # mu = action_scale * tanh(m_f(h)) (Eq. 4)
    sigma: float = 0.05  # standard deviation of the Gaussian policy
    progress_feature: bool = False  # t / (N - 1) as a ninth global node feature
    mean_features: bool = True  # False zeroes the weight/bias mean features of §4.1
    obs_norm: bool = False  # standardize the features by running statistics saved with the agent (gns_jax.obs_norm)
    env_batching: str = "vmap"  # the environments of a device in one program: vmap | loop (over_envs)


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """How Algorithm 1 runs (``gns_jax.train.train_agent``); see ``gns_jax.config.agent_config`` for each field."""

    seed: int = 0
    episodes: int = 30
    num_envs: int = 1  # environments per device
    num_devices: int = 1  # 0 = all local devices
    group_size: int = 1  # environments sharing their reset key (common random numbers)
    reward_scale: float = 1.0
    truncated_episodes: int = 0
    truncated_fraction: float = 0.25
    val_subsample: int = 0
    checkpoint_every: int = 1
    keep_checkpoints: int = 0  # 0 = all
    probe: bool = True
    init_checkpoint: str = ""


@dataclasses.dataclass(frozen=True)
class DeployOptions:
    """§4.3 deployment (``gns_jax.apply.deploy``) of one run."""

    seed: int = 0  # the run starts from Task.init(key(seed), lr), as a baseline run with this seed
    steps: int = 0  # T; the last T - N K steps keep the last learning rate
    candidates: int = 5  # initial learning rates tried, log-spaced over the prior
    pre_decisions: int = 2  # T_pre / K
    selection: str = "value"  # 'value': V(s_{T_pre}) (§4.3) | 'metric': validation metric at T_pre


def env_config(config: ml_collections.ConfigDict) -> EnvConfig:
    a = config.agent
    return EnvConfig(decision_interval=int(config.decision_interval),
                     num_decisions=int(config.steps) // int(config.decision_interval), lr_min=float(a.lr_min),
                     lr_max=float(a.lr_max), prior_lr_min=float(a.prior_lr_min), prior_lr_max=float(a.prior_lr_max),
                     divergence_penalty=float(a.divergence_penalty), validation_prob=float(a.validation_prob),
                     collapse_loss_ratio=float(a.get("collapse_loss_ratio", 0.0)),
                     collapse_below_start=bool(a.get("collapse_below_start", False)))


def ppo_config(agent_cfg: ml_collections.ConfigDict) -> PPOConfig:
    a = agent_cfg
    return PPOConfig(gamma=a.gamma, gae_lambda=a.gae_lambda, clip_eps=a.clip_eps, vf_coef=a.vf_coef,
                     ent_coef=a.ent_coef, actor_lr=a.actor_lr, critic_lr=a.critic_lr, epochs=int(a.ppo_epochs),
                     num_minibatches=int(a.num_minibatches), max_grad_norm=a.max_grad_norm,
                     center_advantages=bool(a.get("center_advantages", True)), group_size=int(a.get("group_size", 1)),
                     actor_warmup_steps=int(a.get("critic_warmup_updates", 0)) * int(a.ppo_epochs)
                     * int(a.num_minibatches), target_kl=float(a.get("target_kl", 0.0)) or None)


def agent_settings(config: ml_collections.ConfigDict) -> AgentSettings:
    a = config.agent
    return AgentSettings(architecture=str(config.model.name), env=env_config(config), ppo=ppo_config(a),
                         encoder=str(a.encoder), encoder_hidden=int(a.encoder_hidden),
                         encoder_layers=int(a.encoder_layers), head_hidden=int(a.head_hidden),
                         action_scale=float(a.action_scale), sigma=float(a.sigma),
                         progress_feature=bool(a.get("progress_feature", False)),
                         mean_features=bool(a.get("mean_features", True)),
                         obs_norm=bool(a.get("obs_norm", False)),
                         env_batching=env_batching(str(config.model.name), str(a.get("env_batching", "auto"))))


CONV_ARCHITECTURES = ("resnet", "vgg")


def env_batching(architecture: str, choice: str, platform: str | None = None) -> str:
    """``auto``: ``loop`` on a CPU and for convolutional targets, ``vmap`` for dense targets on an accelerator.

    Measured by ``benchmarks/decision_step.py`` (docs/performance.md): under ``vmap`` every environment's
    convolutions carry their own weights, which XLA runs as one grouped convolution (two vmapped narrow ResNet-18
    targets took 2.7x as long as the same two one after the other); on a CPU even the MLP's decision step was 10-20 %
    slower vmapped than looped (one MLP already keeps the cores busy). On a GPU, where one MLP leaves the device
    mostly idle, 8 vmapped MLP environments run in little more time than one.
    """
    if choice != "auto":
        return choice
    platform = platform or jax.default_backend()
    return "loop" if platform == "cpu" or architecture in CONV_ARCHITECTURES else "vmap"


def training_options(config: ml_collections.ConfigDict) -> TrainingOptions:
    a = config.agent
    return TrainingOptions(seed=int(config.seed), episodes=int(a.episodes), num_envs=int(a.num_envs),
                           num_devices=int(a.get("num_devices", 1)), group_size=int(a.get("group_size", 1)),
                           reward_scale=float(a.get("reward_scale", 1.0)),
                           truncated_episodes=int(a.get("truncated_episodes", 0)),
                           truncated_fraction=float(a.get("truncated_fraction", 0.25)),
                           val_subsample=int(a.get("val_subsample", 0)),
                           checkpoint_every=max(1, int(a.get("checkpoint_every", 1))),
                           keep_checkpoints=int(a.get("keep_checkpoints", 0)), probe=bool(a.get("probe", True)),
                           init_checkpoint=str(a.get("init_checkpoint", "")))


def deploy_options(config: ml_collections.ConfigDict) -> DeployOptions:
    a = config.agent
    return DeployOptions(seed=int(config.seed), steps=int(config.steps), candidates=int(a.deploy_candidates),
                         pre_decisions=int(a.deploy_pre_decisions), selection=str(a.get("deploy_selection", "value")))


def fixed_schedule(config: ml_collections.ConfigDict) -> Eq7Schedule:
    """The config's schedule: ``constant`` is flat at ``optimizer.learning_rate``; the others follow Eq. 7."""
    o = config.optimizer
    if o.schedule == "constant":
        return Eq7Schedule.constant(o.learning_rate)
    return Eq7Schedule.from_hparams(o.schedule, config.steps, alpha_max=o.learning_rate, mu=o.mu, eta1=o.eta1,
                                    eta2=o.eta2, power=o.power)
