"""The ``compare`` mode: GNS against every baseline, tuned on validation, then run for several seeds (Table 20).

For each method of ``config.compare.methods``:

1. *Tune* on the validation metric, with runs seeded by ``compare.tune_seed`` (disjoint from the evaluation seeds):

   - ``constant``, ``polynomial``, ``cosine``: grid search over the Eq. 7 space ``compare.space`` (Table 5 for
     images; ``compare_config('glue')`` holds Table 6). ``constant`` is flat at each alpha_max; ``cosine`` ignores p.
   - ``cmaes``: CMA-ES over the cosine-with-warmup hyperparameters (E.7): ``compare.cma.evaluations`` evaluations of
     the ``cma`` library's ask/tell loop on the unit cube, mapped to the box (log-uniform for alpha_max and mu).
   - ``adam_hd``, ``sgd_hd``: grid over alpha_0 x beta (App. B.4).
   - ``schedule_free_adamw``, ``prodigy``, ``dadapt_adamw``, ``mechanize``: the optax.contrib defaults, with a
     small learning-rate grid where the optimizer has a learning rate (``compare.lr_free``).
   - ``gns``, ``frs``, ``css``, ``srls``: train the agent (``gns_jax.train.train_agent``, Algorithm 1) with the
     method's encoder / validation probability (Table 4; SRLS: final-layer state, p = 1).

   The point with the best validation metric is kept; the test metric is never looked at.
2. *Evaluate*: ``compare.num_seeds`` runs with seeds 0, 1, ... of the selected setting (agents: deployment, §4.3).

Everything is resumable: every grid point / CMA-ES evaluation is one JSON under ``workdir/tune/<method>/``, the
selection is ``tune/<method>/selected.json``, agents checkpoint under ``workdir/agents/<method>/`` after every
episode, and every evaluation run is ``workdir/runs/<method>/seed_<s>.json``. A rerun skips what exists, so the
experiment can run in parts (e.g. one method per call with ``--config.compare.methods="('cosine',)"``).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
from absl import logging

from gns_jax import checkpoints
from gns_jax.apply import AgentController
from gns_jax.config import ConfigError, base_config, config_to_dict, with_added_defaults
from gns_jax.controllers import (
    LR_FREE,
    Controller,
    ScheduleController,
    hypergradient_controller,
    lr_free_controller,
)
from gns_jax.schedules import Eq7Schedule
from gns_jax.settings import deploy_options
from gns_jax.targets.build import build_task
from gns_jax.targets.task import Task
from gns_jax.train import CHECKPOINT_DIR, train_agent
from gns_jax.workdir import check as check_settings
from gns_jax.workdir import read_json, write_json

AGENT_SELECTIONS = ("last", "best_val")
SCHEDULE_METHODS = ("constant", "polynomial", "cosine")
HD_METHODS = {"adam_hd": "adam", "sgd_hd": "sgd"}
# Table 4's ablations and SRLS: agent settings that differ from GNS (encoder 'gcn', p from config.agent).
AGENT_METHODS = {
    "gns": {},
    "frs": {"validation_prob": 1.0},  # full reward signal: validation at every decision step
    "css": {"encoder": "css"},
    "srls": {"encoder": "srls", "validation_prob": 1.0},
}
METHODS = SCHEDULE_METHODS + ("cmaes",) + tuple(HD_METHODS) + tuple(LR_FREE) + tuple(AGENT_METHODS)

# Table 5 (images) and Table 6 (GLUE) search spaces of the Eq. 7 schedules; E.7 boxes of CMA-ES.
TABLE5_SPACE = {"alpha_max": (1e-1, 1e-2, 1e-3), "mu": (1e-1, 1e-2, 1e-3), "eta1": (0.0,), "eta2": (0.5, 1.0),
                "power": (1.0, 2.0)}
TABLE6_SPACE = {"alpha_max": (1e-5, 2e-5), "mu": (0.0,), "eta1": (0.0, 0.025, 0.05, 0.075, 0.1), "eta2": (1.0,),
                "power": (1.0, 2.0)}
CMA_IMAGES = {"alpha_max": (1e-3, 1e-1), "mu": (1e-3, 1e-1), "eta1": (), "eta2": (0.5, 1.0)}
CMA_GLUE = {"alpha_max": (1e-5, 1e-4), "mu": (), "eta1": (0.0, 0.1), "eta2": ()}
CMA_FIXED = {"alpha_max": 1e-3, "mu": 0.0, "eta1": 0.0, "eta2": 1.0}  # values of dimensions given as ()
CMA_LOG = ("alpha_max", "mu")  # log-uniform dimensions; the others are uniform


def compare_config(domain: str = "images") -> ml_collections.ConfigDict:
    """Defaults of ``config.compare``: the paper's search spaces for ``domain`` 'images' (Table 5) or 'glue' (6)."""
    if domain not in ("images", "glue"):
        raise ValueError(f"unknown domain {domain!r}; choose 'images' or 'glue'")
    images = domain == "images"
    c = ml_collections.ConfigDict()
    c.methods = METHODS  # which methods to run, in this order (see METHODS)
    c.num_seeds = 5  # evaluation runs per method, seeds 0 .. num_seeds - 1 (Table 20: 5)
    c.tune_seed = 1000  # seed of every tuning run (grid points, CMA-ES evaluations); not an evaluation seed
    c.agent_seed = 0  # seed of agent training (GNS, FRS, CSS, SRLS)
    c.agent_episodes = 0  # agent-training episodes; 0 = config.agent.episodes
    c.agent_selection = "last"  # agent deployed: 'last' (Algorithm 1) | 'best_val' (policy of the best-val episode)
    c.space = ml_collections.ConfigDict(dict(TABLE5_SPACE if images else TABLE6_SPACE))  # Eq. 7 grid
    c.hd = ml_collections.ConfigDict()
    c.hd.alpha0 = (1e-1, 1e-2, 1e-3) if images else (1e-5, 2e-5)  # alpha_0 of Adam-HD / SGD-HD (App. B.4)
    c.hd.beta = (1e-7, 1e-8, 1e-9)  # hypergradient learning rates (App. B.4)
    c.hd.sgd_momentum = 0.0  # SGD-HD's heavy-ball momentum (0: plain SGD-HD)
    c.cma = ml_collections.ConfigDict(dict(CMA_IMAGES if images else CMA_GLUE))  # E.7 box; () = fixed (CMA_FIXED)
    c.cma.evaluations = 50  # E.7: 50 evaluations
    c.cma.seed = 0  # seed of CMA-ES's own sampling
    c.cma.sigma0 = 0.3  # initial step size on the unit cube (start at its centre)
    c.cma.popsize = 0  # 0 = cma's default, 4 + floor(3 ln d)
    c.lr_free = ml_collections.ConfigDict()  # learning rates tried; () = the documented default only
    c.lr_free.schedule_free_adamw = (1e-3, 2.5e-3, 1e-2)  # default 2.5e-3
    c.lr_free.prodigy = (0.5, 1.0, 2.0)  # multiplier of the estimated step size; default 1.0
    c.lr_free.dadapt_adamw = (0.5, 1.0, 2.0)  # same; default 1.0
    c.lr_free.mechanize = ()  # no learning rate: Adam at base LR 1.0, scaled by Mechanic
    c.reference = ""  # report: 'table20' shows the paper's Table 20 numbers beside the results
    c.report_dir = ""  # report: output folder ('' = the workdir)
    c.report_name = "report"  # report: file names <report_name>.md / .csv / .png
    return c


# ---- search spaces ----------------------------------------------------------------------------------------------
def grid_points(name: str, config: ml_collections.ConfigDict) -> list[dict]:
    """The hyperparameter points a grid method is tuned over (a single ``{}`` for methods without a search)."""
    cc = config.compare
    sp = cc.space
    if name == "constant":
        return [{"alpha": a} for a in sp.alpha_max]
    if name in ("polynomial", "cosine"):
        powers = sp.power if name == "polynomial" else (1.0,)
        points = [{"alpha_max": a, "mu": m, "eta1": e1, "eta2": e2, "power": p}
                  for a, m, e1, e2, p in itertools.product(sp.alpha_max, sp.mu, sp.eta1, sp.eta2, powers)
                  if e1 <= e2]
        if name == "cosine":
            points = [{k: v for k, v in p.items() if k != "power"} for p in points]
        return points
    if name in HD_METHODS:
        return [{"alpha0": a, "beta": b} for a, b in itertools.product(cc.hd.alpha0, cc.hd.beta)]
    if name in LR_FREE:
        lrs = tuple(cc.lr_free.get(name, ()))
        return [{"learning_rate": lr} for lr in lrs] if lrs else [{}]
    raise ValueError(f"{name!r} is not a grid method")


def point_id(hparams: dict) -> str:
    """A readable, file-name-safe id of a hyperparameter point."""
    return ",".join(f"{k}={v:g}" for k, v in sorted(hparams.items())) or "default"


def controller_for(name: str, hparams: dict, config: ml_collections.ConfigDict) -> Controller:
    """The controller of a non-agent method at one hyperparameter point."""
    if name == "constant":
        return ScheduleController(Eq7Schedule.constant(hparams["alpha"]), name)
    if name in ("polynomial", "cosine", "cmaes"):
        kind = "cosine" if name == "cmaes" else name
        return ScheduleController(Eq7Schedule.from_hparams(kind, int(config.steps), **hparams), name)
    if name in HD_METHODS:
        o = config.optimizer
        return hypergradient_controller(HD_METHODS[name], hparams["alpha0"], hparams["beta"],
                                        weight_decay=o.weight_decay if o.name == "adamw" else 0.0,
                                        momentum=config.compare.hd.sgd_momentum)
    if name in LR_FREE:
        return lr_free_controller(name, hparams.get("learning_rate"))
    raise ValueError(f"unknown method {name!r}; choose one of {METHODS}")


# ---- selection and searches -----------------------------------------------------------------------------------
def select_best(results: Sequence[dict], higher_is_better: bool = True) -> int:
    """Index of the result with the best *validation* metric (diverged or non-finite never win; ties: first)."""
    best, best_value = None, None
    for i, r in enumerate(results):
        v = r.get("val_metric")
        if r.get("diverged") or not finite(v):
            continue
        if best is None or (v > best_value if higher_is_better else v < best_value):
            best, best_value = i, v
    if best is None:
        logging.warning("every tuning run diverged; keeping the first point")
        return 0
    return best


def finite(value) -> bool:
    """Whether a number read back from a results file is usable: not null (a non-finite number), not NaN or inf."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def save(path: str, result: dict) -> dict:
    """Write a run's record (``gns_jax.workdir.write_json``: strict JSON, non-finite numbers as null, listed under
    ``non_finite``) and return it as a rerun will read it, so a fresh search and a resumed one select alike."""
    write_json(path, result)
    return read_json(path) or result


def _metric(value) -> str:
    return f"{value:.4f}" if finite(value) else "non-finite"


def grid_search(points: Sequence[dict], evaluate: Callable[[dict], dict], cache_dir: str,
                higher_is_better: bool = True) -> tuple[int, list[dict]]:
    """Evaluate every point (reusing ``cache_dir/<point_id>.json``); returns the val-best index and all results."""
    results = []
    for i, hp in enumerate(points):
        path = os.path.join(cache_dir, point_id(hp) + ".json")
        result = read_json(path)
        if result is None:
            result = save(path, dict(evaluate(hp), hparams=hp))
            logging.info("%s %d/%d %s: val %s", os.path.basename(cache_dir), i + 1, len(points), point_id(hp),
                         _metric(result["val_metric"]))
        results.append(result)
    return select_best(results, higher_is_better), results


@dataclasses.dataclass(frozen=True)
class Box:
    """A CMA-ES search box: per dimension (low, high), log-uniform for CMA_LOG; the rest fixed (E.7)."""

    dims: tuple[tuple[str, float, float], ...]
    fixed: tuple[tuple[str, float], ...]

    @classmethod
    def from_config(cls, cma_cfg: ml_collections.ConfigDict) -> Box:
        dims, fixed = [], []
        for name, default in CMA_FIXED.items():
            bounds = tuple(cma_cfg.get(name, ()))
            if bounds:
                low, high = bounds
                if not 0 <= low < high or (name in CMA_LOG and low <= 0):
                    raise ConfigError(f"config.compare.cma.{name} must be (low, high) with 0 < low < high")
                dims.append((name, float(low), float(high)))
            else:
                fixed.append((name, default))
        if not dims:
            raise ConfigError("config.compare.cma: give at least one dimension a (low, high) range")
        return cls(tuple(dims), tuple(fixed))

    def hparams(self, u: Sequence[float]) -> dict:
        """Unit cube -> hyperparameters (log scale for alpha_max and mu)."""
        out = dict(self.fixed)
        for (name, low, high), ui in zip(self.dims, np.clip(np.asarray(u, float), 0.0, 1.0), strict=True):
            out[name] = float(low * (high / low) ** ui if name in CMA_LOG else low + ui * (high - low))
        out["eta1"] = min(out["eta1"], out["eta2"])
        return out


def cma_search(box: Box, evaluate: Callable[[dict], dict], *, evaluations: int, seed: int, cache_dir: str,
               sigma0: float = 0.3, popsize: int = 0, higher_is_better: bool = True) -> tuple[int, list[dict]]:
    """CMA-ES (E.7) with the ``cma`` library: ask/tell on the unit cube, exactly ``evaluations`` evaluations.

    Sampling uses a private ``numpy.random.Generator`` seeded with ``seed`` (``cma`` would otherwise reseed numpy's
    global generator), so the candidates are a function of the seed and the fitness values. Evaluation i is cached
    as ``cache_dir/eval_<i>.json`` and reused when its candidate matches, which makes the search resumable. The
    last generation is evaluated only up to the budget (and not told). Returns the val-best index and all results.
    """
    import cma

    rng = np.random.default_rng(seed)
    opts = {"bounds": [0.0, 1.0], "seed": np.nan, "randn": lambda *shape: rng.standard_normal(shape),
            "verbose": -9}
    if popsize:
        opts["popsize"] = int(popsize)
    es = cma.CMAEvolutionStrategy([0.5] * len(box.dims), sigma0, opts)
    results: list[dict] = []
    sign = -1.0 if higher_is_better else 1.0
    while len(results) < evaluations:
        candidates = es.ask()
        fitness = []
        for x in candidates[:evaluations - len(results)]:
            i = len(results)
            path = os.path.join(cache_dir, f"eval_{i:03d}.json")
            result = read_json(path)
            if result is None or not np.allclose(result["x"], x, rtol=0, atol=1e-12):
                hp = box.hparams(x)
                result = save(path, dict(evaluate(hp), hparams=hp, x=[float(v) for v in x]))
                logging.info("cmaes %d/%d %s: val %s", i + 1, evaluations, point_id(hp), _metric(result["val_metric"]))
            results.append(result)
            v = result["val_metric"]  # null when it was not finite: the worst fitness, like a divergence
            fitness.append(sign * v if finite(v) and not result.get("diverged") else 1e9)
        if len(fitness) == len(candidates):
            es.tell(candidates, fitness)
    return select_best(results, higher_is_better), results


# ---- the mode -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Counts:
    """What one ``compare`` call did (a rerun of a finished experiment does nothing)."""

    tuning_runs: int = 0
    runs: int = 0
    skipped_runs: int = 0
    agent_trainings: int = 0


def agent_method_config(name: str, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The experiment config with ``name``'s agent settings (Table 4), agent seed and episodes."""
    cfg = copy.deepcopy(config)  # its compare section is not read below train_agent's entry (AgentSettings)
    for field, value in AGENT_METHODS[name].items():
        cfg.agent[field] = value
    cc = config.compare
    cfg.seed = int(cc.agent_seed)
    if int(cc.agent_episodes) > 0:
        cfg.agent.episodes = int(cc.agent_episodes)
    return cfg


def _check(config: ml_collections.ConfigDict) -> None:
    if "compare" not in config:
        raise ConfigError("this config has no 'compare' section; use configs/compare_fashion_mnist_mlp.py or add "
                          "config.compare = gns_jax.compare.compare_config()")
    unknown = [m for m in config.compare.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown methods {unknown} in config.compare.methods; choose from {METHODS}")
    if int(config.compare.num_seeds) < 1:
        raise ConfigError("config.compare.num_seeds must be >= 1")
    if config.compare.get("agent_selection", "last") not in AGENT_SELECTIONS:
        raise ConfigError(f"unknown compare.agent_selection {config.compare.agent_selection!r}; choose from "
                          f"{AGENT_SELECTIONS}")


def run_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, "runs", name)


def seed_path(workdir: str, name: str, seed: int) -> str:
    return os.path.join(run_dir(workdir, name), f"seed_{seed}.json")


def tune_method(name: str, config: ml_collections.ConfigDict, workdir: str, task: Task, counts: Counts):
    """Tune one method on validation; returns (selection record, controller factory ``hparams -> Controller``)."""
    cc = config.compare
    tune_dir = os.path.join(workdir, "tune", name)
    steps, k = int(config.steps), int(config.decision_interval)

    if name in AGENT_METHODS:
        cfg = agent_method_config(name, config)
        counts.agent_trainings += 1
        out = train_agent(cfg, os.path.join(workdir, "agents", name), task=task, progress=False)
        episodes = out["results"]["episodes"]
        selected = {"method": name, "search": "agent training (Algorithm 1)",
                    "hparams": {"encoder": cfg.agent.encoder, "validation_prob": cfg.agent.validation_prob,
                                "episodes": int(cfg.agent.episodes)},
                    "agent_checkpoint": out["results"]["agent_checkpoint"], "tuning_runs": len(episodes),
                    "tuning_wall_seconds": float(sum(e["wall_seconds"] for e in episodes))}
        params = out["state"].ppo.params
        if cc.agent_selection == "best_val":
            episode, params = best_validation_agent(out, os.path.join(workdir, "agents", name),
                                                    task.higher_is_better)
            selected["agent_checkpoint"] = os.path.join(os.path.abspath(workdir), "agents", name, "checkpoints",
                                                        str(episode))
            selected["selected_episode"] = episode
        selected["agent_selection"] = str(cc.agent_selection)
        controller = AgentController(out["agent"], params, deploy_options(cfg), name=name)
        return selected, lambda hp: controller

    def evaluate(hp):
        counts.tuning_runs += 1
        return controller_for(name, hp, config).run(task, steps, k, int(cc.tune_seed))

    if name == "cmaes":
        box = Box.from_config(cc.cma)
        best, results = cma_search(box, evaluate, evaluations=int(cc.cma.evaluations), seed=int(cc.cma.seed),
                                   cache_dir=tune_dir, sigma0=float(cc.cma.sigma0), popsize=int(cc.cma.popsize),
                                   higher_is_better=task.higher_is_better)
        search = f"CMA-ES, {len(results)} evaluations (E.7)"
    else:
        best, results = grid_search(grid_points(name, config), evaluate, tune_dir, task.higher_is_better)
        search = f"grid, {len(results)} points" if len(results) > 1 else "defaults"
    selected = {"method": name, "search": search, "hparams": results[best]["hparams"],
                "val_metric": results[best]["val_metric"], "tuning_runs": len(results),
                "tuning_wall_seconds": float(sum(r["wall_seconds"] for r in results))}
    return selected, lambda hp: controller_for(name, hp, config)


def best_validation_agent(out: dict, agent_dir: str, higher_is_better: bool = True) -> tuple[int, object]:
    """The policy of the training episode with the best validation metric: (episode e, its parameters).

    Checkpoint e holds the agent *before* the PPO update of episode e (step 0 is the initial agent), i.e. the policy
    that played episode e. A selection on validation only, like every grid search here; the test metric is not read.
    """
    episodes = out["results"]["episodes"]
    if not episodes:
        raise ConfigError(f"no finished agent-training episode in {agent_dir}; cannot select on validation")
    e = int(episodes[select_best(episodes, higher_is_better)]["episode"])
    ckpt_dir = os.path.join(agent_dir, CHECKPOINT_DIR)
    if e not in checkpoints.all_steps(ckpt_dir):
        raise ConfigError(f"agent_selection='best_val' needs the checkpoint of episode {e} in {ckpt_dir}, which was "
                          "not kept; train with agent.checkpoint_every=1 and agent.keep_checkpoints=0")
    state, _, _ = checkpoints.restore(ckpt_dir, out["state"], step=e)
    return e, state.ppo.params


EXPERIMENT_FIELDS = ("steps", "decision_interval", "batch_size", "data", "model", "optimizer")


def _experiment_settings(config: ml_collections.ConfigDict) -> dict:
    settings = {k: v for k, v in config_to_dict(config).items() if k in EXPERIMENT_FIELDS}
    settings["data"] = {k: v for k, v in settings["data"].items() if k != "cache_dir"}
    settings["tune_seed"] = int(config.compare.tune_seed)
    return settings


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Every refusal of ``compare``, before any work and reading only: a bad ``compare`` section, a workdir of
    another experiment (cached runs are only reused for the same one), another ``agent_selection`` than the agents
    there were selected with, or agent settings other than those of an agent that still has runs to do."""
    _check(config)
    cc = config.compare
    settings = _experiment_settings(config)
    previous = read_json(os.path.join(workdir, "experiment.json"))
    if previous is not None:  # fields added to the config after these runs held their defaults then
        previous = with_added_defaults(previous, settings, config_to_dict(base_config()))
    if previous is not None and previous != settings:
        changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        raise ConfigError(f"{workdir} holds runs of another experiment (fields {changed} differ); use a new workdir")
    for name in cc.methods:
        if name not in AGENT_METHODS:
            continue
        selected = read_json(os.path.join(workdir, "tune", name, "selected.json"))
        held = None if selected is None else selected.get("agent_selection", "last")
        if held not in (None, cc.agent_selection):
            raise ConfigError(f"{workdir} holds {name} runs with agent_selection={held!r}, not "
                              f"{cc.agent_selection!r}; use a new workdir (copy agents/ into it to skip training)")
        if any(read_json(seed_path(workdir, name, s)) is None for s in range(int(cc.num_seeds))):
            check_settings(os.path.join(workdir, "agents", name), "train_agent", agent_method_config(name, config))


def compare(config: ml_collections.ConfigDict, workdir: str, task: Task | None = None) -> dict:
    """Tune (on validation) and run every method of ``config.compare.methods``; skips what ``workdir`` holds."""
    check_workdir(config, workdir)
    if read_json(os.path.join(workdir, "experiment.json")) is None:
        write_json(os.path.join(workdir, "experiment.json"), _experiment_settings(config))
    cc = config.compare
    seeds = list(range(int(cc.num_seeds)))
    counts = Counts()
    steps, k = int(config.steps), int(config.decision_interval)
    summary = {}
    for name in cc.methods:
        missing = [s for s in seeds if read_json(seed_path(workdir, name, s)) is None]
        counts.skipped_runs += len(seeds) - len(missing)
        selected_path = os.path.join(workdir, "tune", name, "selected.json")
        previous = read_json(selected_path)
        if not missing:
            summary[name] = previous
            continue
        if task is None:
            task = build_task(config)
        selected, make = tune_method(name, config, workdir, task, counts)
        write_json(selected_path, selected)
        logging.info("%s: selected %s (%s)", name, point_id(selected["hparams"]) if name not in AGENT_METHODS
                     else selected["agent_checkpoint"], selected["search"])
        controller = make(selected["hparams"])
        for s in missing:
            result = controller.run(task, steps, k, s)
            counts.runs += 1
            result = save(seed_path(workdir, name, s), dict(result, method=name, seed=s, hparams=selected["hparams"]))
            logging.info("%s seed %d: val %s test %s (%.1f s)", name, s, _metric(result["val_metric"]),
                         _metric(result["test_metric"]), result["wall_seconds"])
        summary[name] = selected
    status = {"counts": dataclasses.asdict(counts), "selected": summary, "config": config_to_dict(config)}
    write_json(os.path.join(workdir, "compare.json"), status)
    return status
