"""PPO learns to steer a learning rate toward a hidden optimum: a toy MDP shaped like GNS (Eq. 2-4).

The environment keeps a learning rate α and a hidden "best" learning rate α*. Each decision step the agent
sees x = log(α/α*) (scaled) and the elapsed time, picks a ~ N(μ, σ²) with μ = 0.1·tanh(m_f(h)), and the
learning rate moves by Eq. 4, α ← clip(α·(1 + a), α_min, α_max). The reward is the improvement of a
"validation metric" P = −|log α − log α*|, r_t = P_{t+1} − P_t (the shape of Eq. 2). If α gets far above α*
(x > `diverge_at`) the "training" diverges as a GNS target does with a NaN loss: the episode ends with a
penalty, and later observations are NaN; those padded steps carry valid=False in the fixed-length trajectory.

Training follows Algorithm 1 at toy scale: every update, `num_envs` vmapped episodes of `horizon` steps are
collected with `lax.scan`, then one `gns_jax.ppo.ppo_update`; the whole run is one jitted `lax.scan`.

Success criterion. Three policies are evaluated on the same 1024 episodes: the trained policy in deployment
mode (a = μ), a random policy a ~ N(0, σ²) that knows nothing about α*, and a greedy controller
a = −0.1·sign(x), which approaches α* as fast as |μ| ≤ 0.1 allows and then chatters around it (so it is a strong
reference, not an upper bound: a policy that slows down near α* does slightly better). The run passes if the
trained policy closes at least half of the gap between random and greedy:

    threshold = random + 0.5 · (greedy − random).

With x_0 ~ U[−2, 2] the greedy return is ≈ E|x_0| ≈ 1 and the random return ≈ −0.06 (std ≈ 0.36 per episode,
so a standard error ≈ 0.01 over 1024 episodes): the threshold (≈ 0.45) sits about 40 standard errors above the
random policy and cannot be reached by chance, while a policy that merely learned "move toward α*" passes.
`python examples/ppo_hidden_lr.py` prints as its last line `mean_return=<x> random_return=<y> threshold=<z>`
and exits with status 1 if mean_return <= threshold.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp
from flax import struct

from gns_jax.policy import ActorCritic, lr_update, select_action
from gns_jax.ppo import PPOConfig, PPOState, Transition, init_ppo_state, ppo_update


@struct.dataclass
class EnvConfig:
    """Hidden-learning-rate task; all fields static.

    Attributes:
      horizon: decision steps per episode.
      init_range: initial x = log(α/α*) ~ U[−init_range, init_range].
      log_target_min, log_target_max: log α* ~ U[min, max].
      lr_min, lr_max: the clip range of Eq. 4's update.
      diverge_at: x above this ends the episode ("NaN loss").
      diverge_penalty: reward subtracted at divergence.
    """

    horizon: int = struct.field(pytree_node=False, default=32)
    init_range: float = struct.field(pytree_node=False, default=2.0)
    log_target_min: float = struct.field(pytree_node=False, default=-9.0)
    log_target_max: float = struct.field(pytree_node=False, default=-2.5)
    lr_min: float = struct.field(pytree_node=False, default=1e-6)
    lr_max: float = struct.field(pytree_node=False, default=1.0)
    diverge_at: float = struct.field(pytree_node=False, default=2.0)
    diverge_penalty: float = struct.field(pytree_node=False, default=1.0)


@struct.dataclass
class EnvState:
    """Attributes: lr (α), target_lr (α*, hidden), t (decision step), alive (not yet diverged or finished)."""

    lr: jax.Array
    target_lr: jax.Array
    t: jax.Array
    alive: jax.Array


def _log_ratio(state: EnvState) -> jax.Array:
    return jnp.log(state.lr) - jnp.log(state.target_lr)


def _observe(state: EnvState, cfg: EnvConfig) -> jax.Array:
    obs = jnp.stack([_log_ratio(state) / cfg.init_range, state.t / cfg.horizon], axis=-1)
    return jnp.where(state.alive, obs, jnp.nan)


def reset(key: jax.Array, cfg: EnvConfig) -> tuple[jax.Array, EnvState]:
    """New episode: α* log-uniform, α at a uniform log-distance from it."""
    k_target, k_init = jax.random.split(key)
    log_target = jax.random.uniform(k_target, (), minval=cfg.log_target_min, maxval=cfg.log_target_max)
    x0 = jax.random.uniform(k_init, (), minval=-cfg.init_range, maxval=cfg.init_range)
    state = EnvState(lr=jnp.exp(log_target + x0), target_lr=jnp.exp(log_target), t=jnp.zeros((), jnp.int32), alive=True)
    return _observe(state, cfg), state


def step(
    key: jax.Array, state: EnvState, action: jax.Array, cfg: EnvConfig
) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, jax.Array]]:
    """Applies Eq. 4 and returns (obs, state, reward, done, info); a finished episode stays frozen.

    `key` is unused (the dynamics are deterministic) and kept for the standard env signature.
    """
    del key
    lr = lr_update(state.lr, jnp.clip(action, -0.5, 0.5), cfg.lr_min, cfg.lr_max)
    before = -jnp.abs(_log_ratio(state))
    moved = state.replace(lr=lr, t=state.t + 1)
    diverged = _log_ratio(moved) > cfg.diverge_at
    reward = -jnp.abs(_log_ratio(moved)) - before - cfg.diverge_penalty * diverged
    done = jnp.logical_or(diverged, moved.t >= cfg.horizon)
    new_state = moved.replace(alive=jnp.logical_not(done))
    new_state = jax.tree.map(lambda new, old: jnp.where(state.alive, new, old), new_state, state)
    reward = jnp.where(state.alive, reward, 0.0)
    return _observe(new_state, cfg), new_state, reward, done, {"diverged": diverged & state.alive}


@struct.dataclass
class TrainConfig:
    """Attributes: env, ppo, num_envs (vmapped episodes per update), num_updates, sigma (policy σ)."""

    env: EnvConfig = struct.field(pytree_node=False, default_factory=EnvConfig)
    ppo: PPOConfig = struct.field(pytree_node=False, default_factory=lambda: PPOConfig(epochs=4, num_minibatches=4))
    num_envs: int = struct.field(pytree_node=False, default=64)
    num_updates: int = struct.field(pytree_node=False, default=150)
    sigma: float = struct.field(pytree_node=False, default=0.05)


def make_model(cfg: TrainConfig) -> ActorCritic:
    """Actor-critic on the raw observation (identity encoder)."""
    return ActorCritic(encoder=lambda x: x, sigma=cfg.sigma)


MODES = ("sample", "deterministic", "random", "greedy")


def rollout(key: jax.Array, params, cfg: TrainConfig, num_envs: int, mode: str | jax.Array = "sample"):
    """Runs `num_envs` episodes of `horizon` steps; returns (Transition [T, N], last_value [N]).

    mode (a name, or its index in MODES, possibly traced): 'sample' (a ~ π, for training), 'deterministic'
    (a = μ), 'random' (a ~ N(0, σ²)), 'greedy' (a = −0.1·sign(x)).
    """
    model = make_model(cfg)
    mode_index = MODES.index(mode) if isinstance(mode, str) else mode
    k_reset, k_steps = jax.random.split(key)
    obs, state = jax.vmap(reset, in_axes=(0, None))(jax.random.split(k_reset, num_envs), cfg.env)

    def one_step(carry, k):
        obs, state = carry
        dist, value = model.apply(params, obs)
        sampled, _ = select_action(k, dist)
        candidates = (
            sampled,
            dist.mode(),
            cfg.sigma * jax.random.normal(k, sampled.shape),
            -model.action_scale * jnp.sign(_log_ratio(state)),
        )
        action = jnp.stack(candidates)[mode_index]
        valid = state.alive
        next_obs, state, reward, done, _ = jax.vmap(step, in_axes=(None, 0, 0, None))(k, state, action, cfg.env)
        transition = Transition(
            obs=obs,
            action=action,
            reward=reward,
            done=done,
            value=value,
            log_prob=dist.log_prob(action),
            valid=valid,
        )
        return (next_obs, state), transition

    (obs, _), trajectory = jax.lax.scan(one_step, (obs, state), jax.random.split(k_steps, cfg.env.horizon))
    _, last_value = model.apply(params, obs)
    return trajectory, last_value


def make_train(cfg: TrainConfig):
    """Returns a jittable `train(key) -> (PPOState, metrics per update)`."""
    model = make_model(cfg)

    def train(key: jax.Array) -> tuple[PPOState, dict[str, jax.Array]]:
        k_init, k_run = jax.random.split(key)
        params = model.init(k_init, jnp.zeros((1, 2)))
        state = init_ppo_state(params, cfg.ppo)

        def update(state: PPOState, k):
            k_roll, k_ppo = jax.random.split(k)
            trajectory, last_value = rollout(k_roll, state.params, cfg, cfg.num_envs)
            state, metrics = ppo_update(k_ppo, state, trajectory, last_value, model.apply, cfg.ppo)
            valid = trajectory.valid
            metrics["episode_return"] = trajectory.reward.sum(0).mean()
            metrics["valid_frac"] = valid.mean()
            return state, metrics

        return jax.lax.scan(update, state, jax.random.split(k_run, cfg.num_updates))

    return train


def evaluate(key: jax.Array, params, cfg: TrainConfig, num_episodes: int = 1024) -> dict[str, jax.Array]:
    """Per-episode returns [num_episodes] of the deterministic, random and greedy policies, same episodes."""
    names = ("deterministic", "random", "greedy")
    # One compiled rollout, vmapped over the policy choice.
    episode_return = lambda mode: rollout(key, params, cfg, num_episodes, mode)[0].reward.sum(0)
    returns = jax.vmap(episode_return)(jnp.array([MODES.index(n) for n in names]))
    return dict(zip(names, returns, strict=True))


def run(cfg: TrainConfig, seed: int = 0) -> dict[str, float]:
    """Trains, evaluates, and returns mean returns plus the pass threshold."""
    key_train, key_eval = jax.random.split(jax.random.key(seed))
    state, metrics = jax.jit(make_train(cfg))(key_train)
    returns = jax.jit(evaluate, static_argnums=(2, 3))(key_eval, state.params, cfg)
    random_return = float(returns["random"].mean())
    greedy_return = float(returns["greedy"].mean())
    return {
        "mean_return": float(returns["deterministic"].mean()),
        "random_return": random_return,
        "random_std": float(returns["random"].std()),
        "greedy_return": greedy_return,
        "threshold": random_return + 0.5 * (greedy_return - random_return),
        "first_train_return": float(metrics["episode_return"][0]),
        "last_train_return": float(metrics["episode_return"][-1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-updates", type=int, default=TrainConfig().num_updates)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.time()
    result = run(TrainConfig(num_updates=args.num_updates), args.seed)
    print(
        f"train_return first={result['first_train_return']:.3f} last={result['last_train_return']:.3f} "
        f"greedy_return={result['greedy_return']:.3f} random_std={result['random_std']:.3f} "
        f"seconds={time.time() - start:.1f}"
    )
    print(
        f"mean_return={result['mean_return']:.4f} random_return={result['random_return']:.4f} "
        f"threshold={result['threshold']:.4f}"
    )
    return 0 if result["mean_return"] > result["threshold"] else 1


if __name__ == "__main__":
    sys.exit(main())
