"""One controller interface for GNS and every baseline it is compared with (Tables 1, 4, 20).

A *controller* decides the learning rate of one target training run. The run itself is the same for every method
(``Controller.run``): ``Task.init`` from the seed, then ceil(T / K) decision points (the last interval is shorter when
K does not divide T); at each one the controller receives an ``Observation`` (step, current learning rate, mean
training loss of the last K steps, the target's state) and returns a *decision* for the next K optimizer steps:

    a number     that learning rate, written into ``opt_state.hyperparams['learning_rate']``;
    a callable   a per-step schedule ``step -> lr`` evaluated inside the K-step ``lax.scan`` (Eq. 7 schedules);
    None         leave the learning rate to the optimizer (Adam-HD / SGD-HD adapt it themselves, App. B.4).

Every optimizer keeps its learning rate in ``opt_state.hyperparams`` the way ``optax.inject_hyperparams`` does: the
task's own ``inject_hyperparams(adam)`` for the schedules and GNS, ``gns_jax.hypergradient`` for the HD baselines,
and the learning-rate-free optimizers of ``optax.contrib`` wrapped in ``optax.inject_hyperparams``. So every method
shares the initialization, the seeded data order, the jitted K-step scan and the evaluation; only the learning rate
differs. Baselines ignore the observation.

GNS and its ablations (Table 4: FRS, CSS; and SRLS) are ``gns_jax.apply.AgentController``s around a trained agent,
beside deployment: their run is ``deploy`` (§4.3: the initial learning rate is picked by V(s) among candidates);
given a fixed ``initial_lr`` they go through this loop instead, each decision being the policy's mean action on
the observation. This module knows nothing of agents: the baselines sit below the agent's code.

A run returns a JSON-ready dict: ``val_metric``, ``test_metric`` (of the final weights; never used for selection),
``lr_trajectory`` (the learning rate at the start of every decision interval: ceil(T / K) values, NaN after
a divergence), ``train_loss_trajectory``, ``diverged``, ``steps`` and ``wall_seconds``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from gns_jax.hypergradient import adam_hd, sgd_hd
from gns_jax.runtime import machine
from gns_jax.schedules import Eq7Schedule
from gns_jax.targets.task import TargetState, Task, get_learning_rate, set_hyperparams, set_learning_rate

Decision = float | Callable[[jnp.ndarray], jnp.ndarray] | None


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a controller sees at a decision point (baselines ignore it)."""

    step: int  # optimizer steps taken so far
    decision: int  # index of this decision point (0 = before the first step)
    learning_rate: float  # the learning rate now held in the optimizer state
    mean_loss: float  # mean training loss of the last K steps (NaN at decision 0)
    target: TargetState  # params, grads of the last step, optimizer state


_SPECIALIZED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def task_for(task: Task, controller: Controller) -> Task:
    """``task`` with the controller's optimizer; cached, so every run of one optimizer shares compiled programs."""
    key = controller.optimizer_key
    if key is None:
        return task
    cache = _SPECIALIZED.setdefault(task, {})
    if key not in cache:
        cache[key] = dataclasses.replace(task, optimizer=controller.make_optimizer())
    return cache[key]


class Controller:
    """Base class: the generic run loop; subclasses override the decision and, where needed, the optimizer."""

    name = "controller"
    optimizer_key: Hashable | None = None  # None: train with the task's own inject_hyperparams optimizer

    def make_optimizer(self) -> optax.GradientTransformation:
        raise NotImplementedError

    def initial_learning_rate(self) -> float:
        raise NotImplementedError

    def init_hyperparams(self) -> dict[str, float]:
        """Other injected hyperparameters to set at initialization (e.g. beta of Adam-HD)."""
        return {}

    def learning_rate(self, step: int, obs: Observation) -> Decision:
        raise NotImplementedError

    def recorded_learning_rate(self, opt_state) -> float:
        """The learning rate written into the trajectory (LR-free optimizers: their effective step size)."""
        return float(get_learning_rate(opt_state))

    def eval_target(self, target: TargetState) -> TargetState:
        """The state to evaluate (schedule-free: its averaged parameters)."""
        return target

    def run(self, task: Task, steps: int, decision_interval: int, seed: int, progress: bool = False,
            curve_every: int = 0) -> dict:
        """One training run of ``steps`` optimizer steps, deciding every ``decision_interval`` steps.

        The one run loop of every method (``train_target``'s fixed schedule, the tuned baselines, a trained agent
        from a given learning rate, the replay of a deployment); ``progress`` shows a progress bar over the decision
        points; ``curve_every`` > 0 also evaluates the validation split every that many decision intervals and at
        the end (``val_steps``, ``val_curve``).
        """
        start_time = time.time()
        task = task_for(task, self)
        k = int(decision_interval)
        starts = range(0, int(steps), k)
        state = task.init(jax.random.key(seed), self.initial_learning_rate())
        state = state.replace(opt_state=set_hyperparams(state.opt_state, self.init_hyperparams()))
        lrs, losses, mean_loss, diverged = [], [], math.nan, False
        val_steps, val_curve = [], []
        for d, s in enumerate(tqdm(starts, desc=self.name, unit="decision", disable=not progress)):
            obs = Observation(step=s, decision=d, learning_rate=float(get_learning_rate(state.opt_state)),
                              mean_loss=mean_loss, target=state)
            decision = self.learning_rate(s, obs)
            schedule = decision if callable(decision) else None
            if decision is not None and schedule is None:
                state = state.replace(opt_state=set_learning_rate(state.opt_state, decision))
            lrs.append(float(schedule(s)) if schedule is not None else self.recorded_learning_rate(state.opt_state))
            n = min(k, int(steps) - s)
            state, stats = task.train_steps(state, n, schedule)
            mean_loss = float(stats.mean_loss)
            losses.append(mean_loss)
            if curve_every and ((d + 1) % curve_every == 0 or d + 1 == len(starts)):
                val_steps.append(s + n)
                val_curve.append(float(task.evaluate(self.eval_target(state), "val")["metric"]))
            if not bool(stats.finite):
                diverged = True  # nothing left to learn from this run: stop early
                break
        lrs += [math.nan] * (len(starts) - len(lrs))
        target = self.eval_target(state)
        val, test = task.evaluate(target, "val"), task.evaluate(target, "test")
        return {
            "val_metric": float(val["metric"]),
            "test_metric": float(test["metric"]),
            "val_loss": float(val["loss"]),
            "test_loss": float(test["loss"]),
            "metric_name": task.metric_name,
            "higher_is_better": task.higher_is_better,
            "steps": int(state.step),
            "diverged": diverged,
            "wall_seconds": time.time() - start_time,
            "machine": machine(),
            "decision_interval": k,
            "lr_trajectory": lrs,
            "train_loss_trajectory": losses,
            "final_learning_rate": self.recorded_learning_rate(state.opt_state),
            **({"val_steps": val_steps, "val_curve": val_curve} if curve_every else {}),
        }


class ScheduleController(Controller):
    """A fixed schedule ``step -> lr`` (Eq. 7: constant, polynomial or cosine with warmup); ignores observations."""

    def __init__(self, schedule: Eq7Schedule, name: str = "schedule"):
        self.schedule = schedule
        self.name = name

    def initial_learning_rate(self) -> float:
        return float(self.schedule(0))

    def learning_rate(self, step: int, obs: Observation) -> Decision:
        return self.schedule


class TrajectoryController(Controller):
    """The learning rate of every decision interval, given in advance (e.g. a deployment's record, replayed)."""

    def __init__(self, learning_rates: Sequence[float], name: str = "trajectory"):
        self.learning_rates = [float(x) for x in learning_rates]
        self.name = name

    def initial_learning_rate(self) -> float:
        return self.learning_rates[0]

    def learning_rate(self, step: int, obs: Observation) -> Decision:
        return self.learning_rates[min(obs.decision, len(self.learning_rates) - 1)]


class OptimizerController(Controller):
    """The optimizer sets its own learning rate (Adam-HD, SGD-HD, LR-free optimizers); ignores observations.

    Args:
      name: method name.
      factory: ``() -> GradientTransformation`` whose state has ``hyperparams['learning_rate']``.
      optimizer_key: hashable description of the factory's static settings (runs of one key share programs).
      learning_rate: initial learning rate (alpha_0, or the LR-free optimizer's learning-rate multiplier).
      hyperparams: other injected hyperparameters set at initialization.
      effective_lr: ``opt_state -> float`` recorded in the trajectory (default: the injected learning rate).
      eval_params: ``(opt_state, params) -> params`` to evaluate (default: the params).
    """

    def __init__(self, name: str, factory: Callable[[], optax.GradientTransformation], optimizer_key: Hashable,
                 learning_rate: float, hyperparams: Mapping[str, float] | None = None,
                 effective_lr: Callable[[Any], float] | None = None,
                 eval_params: Callable[[Any, Any], Any] | None = None):
        self.name = name
        self._factory = factory
        self.optimizer_key = optimizer_key
        self._lr = float(learning_rate)
        self._hyperparams = dict(hyperparams or {})
        self._effective_lr = effective_lr
        self._eval_params = eval_params

    def make_optimizer(self) -> optax.GradientTransformation:
        return self._factory()

    def initial_learning_rate(self) -> float:
        return self._lr

    def init_hyperparams(self) -> dict[str, float]:
        return self._hyperparams

    def learning_rate(self, step: int, obs: Observation) -> Decision:
        return None

    def recorded_learning_rate(self, opt_state) -> float:
        if self._effective_lr is None:
            return super().recorded_learning_rate(opt_state)
        return float(self._effective_lr(opt_state))

    def eval_target(self, target: TargetState) -> TargetState:
        if self._eval_params is None:
            return target
        return target.replace(params=self._eval_params(target.opt_state, target.params))


def hypergradient_controller(kind: str, alpha0: float, beta: float, *, b1: float = 0.9, b2: float = 0.999,
                             eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0) -> Controller:
    """Adam-HD (``kind='adam'``, AdamW-HD with ``weight_decay``) or SGD-HD (``kind='sgd'``) from alpha_0, beta."""
    if kind == "adam":
        key = ("adam_hd", b1, b2, eps, weight_decay)
        factory = lambda: adam_hd(alpha0, beta, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    elif kind == "sgd":
        key = ("sgd_hd", momentum)
        factory = lambda: sgd_hd(alpha0, beta, momentum=momentum)
    else:
        raise ValueError(f"unknown hypergradient optimizer {kind!r}; choose 'adam' or 'sgd'")
    return OptimizerController(f"{kind}_hd", factory, key, alpha0, {"hypergrad_lr": beta})


@dataclasses.dataclass(frozen=True)
class LRFreeSpec:
    """An ``optax.contrib`` optimizer with its documented defaults, under ``optax.inject_hyperparams``."""

    factory: Callable[[], optax.GradientTransformation]
    default_lr: float  # the documented default learning rate (multiplier for D-Adaptation / Prodigy)
    effective_lr: Callable[[Any], float] | None = None  # opt_state -> the step size it actually takes
    eval_params: Callable[[Any, Any], Any] | None = None


def _inner(opt_state):
    return opt_state.inner_state


LR_FREE: dict[str, LRFreeSpec] = {
    # Evaluated at its averaged iterate x (the training iterate y interpolates x and z).
    "schedule_free_adamw": LRFreeSpec(
        factory=lambda: optax.inject_hyperparams(optax.contrib.schedule_free_adamw)(), default_lr=0.0025,
        eval_params=lambda s, p: optax.contrib.schedule_free_eval_params(_inner(s), p)),
    # Step size = learning_rate x d, with d the running distance estimate.
    "prodigy": LRFreeSpec(
        factory=lambda: optax.inject_hyperparams(optax.contrib.prodigy)(), default_lr=1.0,
        effective_lr=lambda s: get_learning_rate(s) * _inner(s).estim_lr),
    "dadapt_adamw": LRFreeSpec(
        factory=lambda: optax.inject_hyperparams(optax.contrib.dadapt_adamw)(), default_lr=1.0,
        effective_lr=lambda s: get_learning_rate(s) * _inner(s).estim_lr),
    # Mechanic has no learning rate of its own: it scales Adam's updates by sum(s); the base LR is 1.0 (its docs).
    "mechanize": LRFreeSpec(
        factory=lambda: optax.inject_hyperparams(lambda learning_rate: optax.contrib.mechanize(
            optax.adam(learning_rate)))(learning_rate=1.0), default_lr=1.0,
        effective_lr=lambda s: get_learning_rate(s) * jnp.sum(_inner(s).s)),
}


def lr_free_controller(name: str, learning_rate: float | None = None) -> Controller:
    """An ``optax.contrib`` learning-rate-free optimizer (``LR_FREE``) at its default or a given learning rate."""
    if name not in LR_FREE:
        raise ValueError(f"unknown learning-rate-free optimizer {name!r}; choose one of {sorted(LR_FREE)}")
    spec = LR_FREE[name]
    lr = spec.default_lr if learning_rate is None else learning_rate
    return OptimizerController(name, spec.factory, (name,), lr, effective_lr=spec.effective_lr,
                               eval_params=spec.eval_params)
