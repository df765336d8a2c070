"""The state-dependence probe: does the policy act on the state, or has it learned a constant?

A scheduler that ignores its input is an open-loop schedule (with Eq. 4 and a constant mean action, an
exponential decay or growth). To see during training whether the agent learned more than that, a fixed set of
probe observations is built once per run and the policy's mean action mu(s) = 0.1 tanh(m_f(h)) (Eq. 4) is read on
it after every PPO update:

* states: ``num_targets`` freshly initialized targets (seeds derived from the run's seed) trained at a constant
  learning rate of 1e-3, observed *early* (decision point 0, after the first K steps) and *late* (decision point
  ``round(late_fraction * (N - 1))``), with the run-progress feature set to match when the agent has one;
* learning rates: each state is observed with the learning-rate feature at every value of ``lrs`` (1e-4, 1e-3,
  1e-2 by default: the paper's prior D_alpha and its middle).

From mu on the probe set (targets x early/late x learning rates) come the numbers logged per update:

* ``probe_spread``: max(mu) - min(mu). A constant policy has spread 0;
* ``probe_slope``: d mu / d log10(alpha), the least-squares slope within each state, averaged. A sensible
  controller lowers a learning rate that is too high: a negative slope;
* ``probe_late_minus_early``: mean mu late - mean mu early (does the agent act differently late in training);
* ``probe_mu_mean``, and ``probe_value_slope``: d V / d log10(alpha) at the early states, the critic's preference
  that deployment (§4.3) uses to pick the initial learning rate.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

PyTree = Any
PROBE_LRS = (1e-4, 1e-3, 1e-2)
PROBE_TRAIN_LR = 1e-3


@struct.dataclass
class ProbeSet:
    """Fixed probe observations and their design.

    Attributes:
      obs: observations stacked on a leading axis of size P = targets x 2 x len(lrs).
      log_lr: [P] log10 of the learning-rate feature of each observation.
      state: [P] index of the (target, early/late) state each observation comes from.
      late: [P] bool, the observation is of the late state.
    """

    obs: PyTree
    log_lr: jnp.ndarray
    state: jnp.ndarray
    late: jnp.ndarray


def build_probe_set(agent, seed: int, num_targets: int = 2, lrs=PROBE_LRS, late_fraction: float = 0.5) -> ProbeSet:
    """Train ``num_targets`` targets at 1e-3 and observe each early and late at every learning rate of ``lrs``.

    Costs ``num_targets * late_point * K`` optimizer steps (about T for the defaults), once per run.
    """
    task, cfg = agent.task, agent.env.config
    k, n = cfg.decision_interval, cfg.num_decisions
    late_point = int(min(n - 1, max(1, round(late_fraction * (n - 1)))))
    train = task.device_data["train"]
    observations, log_lrs, states, late = [], [], [], []
    for target_index in range(num_targets):
        key = jax.random.fold_in(jax.random.key(seed), 7_000 + target_index)
        target, stats = task.train_scan(task.init_state(key, PROBE_TRAIN_LR), train, k)
        early = (target, stats.mean_loss)
        if late_point > 1:
            target, _ = task.train_steps(target, (late_point - 1) * k)
        target, stats = task.train_scan(target, train, k)
        for is_late, (state, loss), point in ((False, early, 0), (True, (target, stats.mean_loss), late_point)):
            for lr in lrs:
                observations.append(agent.observe(state.params, state.grads, jnp.float32(lr), loss,
                                                  jnp.float32(point / max(n - 1, 1))))
                log_lrs.append(np.log10(lr))
                states.append(2 * target_index + int(is_late))
                late.append(is_late)
    obs = jax.tree.map(lambda *xs: jnp.stack(xs), *observations)
    return ProbeSet(obs=obs, log_lr=jnp.asarray(log_lrs, jnp.float32), state=jnp.asarray(states, jnp.int32),
                    late=jnp.asarray(late))


def probe_metrics(mu: jnp.ndarray, values: jnp.ndarray, probe: ProbeSet) -> dict[str, float]:
    """The probe's numbers (module docstring) from mu(s) and V(s) on the probe set."""
    mu, values = np.asarray(mu, np.float64), np.asarray(values, np.float64)
    x, state, late = np.asarray(probe.log_lr, np.float64), np.asarray(probe.state), np.asarray(probe.late)

    def slope(y, mask):
        slopes = []
        for s in np.unique(state[mask]):
            sel = mask & (state == s)
            xc = x[sel] - x[sel].mean()
            slopes.append(float(np.sum(xc * (y[sel] - y[sel].mean())) / max(np.sum(xc * xc), 1e-12)))
        return float(np.mean(slopes))

    everything = np.ones_like(late, bool)
    return {
        "probe_mu_mean": float(mu.mean()),
        "probe_spread": float(mu.max() - mu.min()),
        "probe_slope": slope(mu, everything),
        "probe_late_minus_early": float(mu[late].mean() - mu[~late].mean()) if late.any() and (~late).any() else 0.0,
        "probe_value_slope": slope(values, ~late),
    }


def evaluate_probe(agent, agent_params: PyTree, probe: ProbeSet) -> dict[str, float]:
    """Run the policy and the critic on the probe set and return ``probe_metrics``."""
    mu, values = agent.mean_actions_and_values(agent_params, probe.obs)
    return probe_metrics(mu, values, probe)
