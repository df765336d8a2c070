"""The ``report`` mode: a Table-20-style comparison from the runs ``compare`` wrote.

Reads ``workdir/runs/<method>/seed_<s>.json`` and ``workdir/tune/<method>/selected.json`` and writes, into
``workdir`` (or ``out_dir``):

- ``<name>.md``: test metric mean ± std over the seeds per method (the sample std, ddof = 1, as the paper's "± std"
  is not specified further), the validation mean, the selected hyperparameters, wall time per run and for tuning
  (grid points, CMA-ES evaluations, agent training), and a one-line verdict of GNS against the best baseline;
- ``<name>.csv``: the same numbers, one row per method;
- ``<name>.png``: the learning-rate trajectory of every method (its lowest seed) in one plot.

The baselines in the verdict are every method except GNS and its Table 4 ablations (FRS, CSS); "best" is by mean
test metric, which is how a results table is read — no hyperparameter is ever selected on it.

The results files are strict JSON (``gns_jax.workdir.write_json``): a number that was not finite is ``null``. Here
it counts as NaN, so a method with such a seed shows a NaN mean (and its diverged runs) and is never the best
baseline.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from collections.abc import Sequence

import matplotlib
import ml_collections
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gns_jax.apply import candidate_lrs  # noqa: E402
from gns_jax.compare import AGENT_METHODS, METHODS, point_id  # noqa: E402
from gns_jax.config import ConfigError  # noqa: E402
from gns_jax.runtime import describe_machine  # noqa: E402
from gns_jax.workdir import read_json  # noqa: E402

LABELS = {
    "constant": "Constant", "polynomial": "Polynomial (Eq. 7)", "cosine": "Cosine (Eq. 7)",
    "cmaes": "Cosine, CMA-ES (E.7)", "adam_hd": "Adam-HD (B.4)", "sgd_hd": "SGD-HD (B.4)",
    "schedule_free_adamw": "Schedule-Free AdamW", "prodigy": "Prodigy", "dadapt_adamw": "D-Adapt AdamW",
    "mechanize": "Mechanic (Adam)", "srls": "SRLS", "frs": "GNS-FRS (p = 1, Table 4)",
    "css": "GNS-CSS (Table 4)", "gns": "GNS",
}
GNS_FAMILY = ("gns", "frs", "css")
# Table 20 of the paper (Fashion-MNIST, 3-layer MLP): test accuracy (%), mean ± std over 5 runs.
TABLE20 = {"constant": "88.8 ± 0.2", "polynomial": "89.3 ± 0.3", "cosine": "89.3 ± 0.2", "adam_hd": "89.0 ± 0.2",
           "srls": "89.5 ± 0.4", "gns": "89.8 ± 0.3"}
REFERENCES = {"table20": TABLE20}


def load_runs(workdir: str) -> dict[str, list[dict]]:
    """method -> its evaluation runs, sorted by seed."""
    runs: dict[str, list[dict]] = {}
    for path in glob.glob(os.path.join(workdir, "runs", "*", "seed_*.json")):
        result = read_json(path)
        if result is not None:
            runs.setdefault(os.path.basename(os.path.dirname(path)), []).append(result)
    return {m: sorted(r, key=lambda x: x["seed"]) for m, r in runs.items()}


def agent_probe(workdir: str, method: str) -> dict[str, float]:
    """The state-dependence probe (``gns_jax.probe``) of an agent method's last update, from its episodes.csv."""
    path = os.path.join(workdir, "agents", method, "logs", "episodes.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "probe_spread" not in rows[-1]:
        return {}
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("probe_") and v not in ("", None)}


def _numbers(values: Sequence[float | None]) -> np.ndarray:
    """Numbers read back from results files; null (a non-finite number) becomes NaN."""
    return np.asarray([np.nan if v is None else v for v in values], float)


def _stats(values: Sequence[float | None]) -> tuple[float, float]:
    a = _numbers(values)
    return float(np.mean(a)), float(np.std(a, ddof=1)) if len(a) > 1 else 0.0


def summarize(workdir: str, methods: Sequence[str] = ()) -> list[dict]:
    """One row per method with runs: ``methods`` first (in that order), then any others found."""
    runs = load_runs(workdir)
    order = [m for m in methods if m in runs] + [m for m in METHODS if m in runs and m not in methods]
    order += sorted(m for m in runs if m not in order)
    rows = []
    for m in order:
        rs = runs[m]
        selected = read_json(os.path.join(workdir, "tune", m, "selected.json")) or {}
        test_mean, test_std = _stats([r["test_metric"] for r in rs])
        val_mean, val_std = _stats([r["val_metric"] for r in rs])
        run_seconds = float(np.mean([r["wall_seconds"] for r in rs]))
        tuning_seconds = float(selected.get("tuning_wall_seconds", 0.0))
        rows.append({
            "method": m, "label": LABELS.get(m, m), "seeds": len(rs), "test_mean": test_mean, "test_std": test_std,
            "val_mean": val_mean, "val_std": val_std, "diverged": int(sum(bool(r.get("diverged")) for r in rs)),
            "metric_name": rs[0].get("metric_name", "metric"), "steps": int(rs[0].get("steps", 0)),
            "run_seconds": run_seconds, "tuning_seconds": tuning_seconds,
            "total_seconds": tuning_seconds + float(sum(r["wall_seconds"] for r in rs)),
            "search": selected.get("search", ""), "tuning_runs": int(selected.get("tuning_runs", 0)),
            "hparams": rs[0].get("hparams", {}), "agent_selection": selected.get("agent_selection", ""),
            "selected_episode": selected.get("selected_episode"),
            "lr_trajectory": rs[0]["lr_trajectory"], "decision_interval": int(rs[0].get("decision_interval", 1)),
            "machines": [describe_machine(r["machine"]) if r.get("machine") else "" for r in rs],
            **({"probe": agent_probe(workdir, m)} if m in AGENT_METHODS else {}),
        })
    return rows


def _fmt_hparams(method: str, hp: dict, row: dict | None = None) -> str:
    if method in GNS_FAMILY + ("srls",):
        text = f"encoder {hp.get('encoder')}, p = {hp.get('validation_prob')}, {hp.get('episodes')} episodes"
        if row and row.get("agent_selection") == "best_val":
            text += f"; policy of episode {row['selected_episode']} (best validation)"
        return text
    return point_id(hp).replace(",", ", ")


def verdict(rows: Sequence[dict], scale: float) -> str:
    """GNS against the best baseline by mean test metric (with the spread of both)."""
    by = {r["method"]: r for r in rows}
    baselines = [r for r in rows if r["method"] not in GNS_FAMILY]
    if "gns" not in by or not baselines:
        return "No verdict: the report needs GNS and at least one baseline."
    gns = by["gns"]
    if not np.isfinite(gns["test_mean"]):
        return f"No verdict: GNS has no finite mean test metric ({gns['diverged']} of {gns['seeds']} runs diverged)."
    best = max(baselines, key=lambda r: r["test_mean"] if np.isfinite(r["test_mean"]) else -np.inf)
    diff = (gns["test_mean"] - best["test_mean"]) * scale
    spread = max(gns["test_std"], best["test_std"]) * scale
    if diff > 0:
        what = "beats" if diff > spread else "is ahead of, but within one standard deviation of,"
    else:
        what = "does not beat"
    return (f"GNS ({gns['test_mean'] * scale:.2f} ± {gns['test_std'] * scale:.2f}) {what} the best baseline, "
            f"{best['label']} ({best['test_mean'] * scale:.2f} ± {best['test_std'] * scale:.2f}): "
            f"difference {diff:+.2f}.")


def plot_methods(rows: Sequence[dict], path: str, title: str) -> str:
    """Learning rate (log scale) against optimizer steps, one line per method, GNS drawn bold."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = plt.get_cmap("tab20")
    for i, r in enumerate(rows):
        lrs = _numbers(r["lr_trajectory"])
        lrs = np.append(lrs, lrs[-1])  # hold the last value to the end of its interval
        steps = np.arange(len(lrs)) * r["decision_interval"]
        bold = r["method"] == "gns"
        ax.step(steps, np.where(lrs > 0, lrs, np.nan), where="post", lw=2.5 if bold else 1.2,
                color="black" if bold else colors(i % 20), label=r["label"], zorder=3 if bold else 2)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(workdir: str, out_dir: str | None = None, name: str = "report", methods: Sequence[str] = (),
                 title: str = "Comparison", preamble: str = "", reference: str = "") -> dict:
    """Write ``<name>.md``, ``<name>.csv`` and ``<name>.png`` into ``out_dir`` (default: ``workdir``)."""
    out_dir = out_dir or workdir
    os.makedirs(out_dir, exist_ok=True)
    rows = summarize(workdir, methods)
    if not rows:
        raise ValueError(f"no runs under {os.path.join(workdir, 'runs')}: run --mode=compare first")
    metric = rows[0]["metric_name"]
    scale, unit = (100.0, " (%)") if metric == "accuracy" else (1.0, "")
    ref = REFERENCES.get(reference, {})
    paths = {k: os.path.join(out_dir, f"{name}.{k}") for k in ("md", "csv", "png")}

    with open(paths["csv"], "w", newline="") as f:
        fields = ["method", "seeds", "test_mean", "test_std", "val_mean", "val_std", "diverged", "steps",
                  "run_seconds", "tuning_seconds", "total_seconds", "tuning_runs", "search", "hparams",
                  "agent_selection", "selected_episode", "probe_spread", "probe_slope"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow(dict(r, hparams=json.dumps(r["hparams"], sort_keys=True),
                                 **{k: r.get("probe", {}).get(k, "") for k in ("probe_spread", "probe_slope")}))

    plot_methods(rows, paths["png"], f"Learning rate per method (lowest seed)\n{title}")

    head = [f"test {metric}{unit}", f"val {metric}{unit}", "seeds", "selected on validation", "search",
            "time per run (s)", "tuning / agent training (s)"] + (["paper (Table 20)"] if ref else [])
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble.strip(), ""]
    lines += ["| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for r in rows:
        test = f"{r['test_mean'] * scale:.2f} ± {r['test_std'] * scale:.2f}"
        if r["diverged"]:
            test += f" ({r['diverged']} diverged)"
        cells = [r["label"], test, f"{r['val_mean'] * scale:.2f}", str(r["seeds"]),
                 _fmt_hparams(r["method"], r["hparams"], r), r["search"], f"{r['run_seconds']:.1f}",
                 f"{r['tuning_seconds']:.0f}"] + ([ref.get(r["method"], "—")] if ref else [])
        lines.append("| " + " | ".join(cells) + " |")
    probed = [r for r in rows if r.get("probe")]
    if probed:
        lines += ["", "State dependence of each agent after its last update (`gns_jax.probe`: mu on fixed probe "
                  "states; a constant policy has spread 0 and slope 0):", "",
                  "| agent | spread of mu | d mu / d log10 alpha | mu late - early | mean mu |",
                  "|---|---|---|---|---|"]
        for r in probed:
            p = r["probe"]
            lines.append(f"| {r['label']} | {p['probe_spread']:.4f} | {p['probe_slope']:+.4f} | "
                         f"{p.get('probe_late_minus_early', 0.0):+.4f} | {p.get('probe_mu_mean', 0.0):+.4f} |")
    lines += ["", verdict(rows, scale), "", machines_line(rows), "",
              f"Mean ± sample standard deviation over the seeds of the test {metric} of the final weights; "
              "hyperparameters and agents are selected on the validation split only.",
              "", f"![learning-rate trajectories]({os.path.basename(paths['png'])})", ""]
    with open(paths["md"], "w") as f:
        f.write("\n".join(lines))
    return {"rows": [{k: v for k, v in r.items() if k != "lr_trajectory"} for r in rows], **paths}


def machines_line(rows: Sequence[dict]) -> str:
    """Which machines a table's runs ran on, with the methods and run counts of each (``gns_jax.runtime.machine``).

    On a CPU the core count changes the numbers like a seed does, so a table whose rows ran on different core counts
    says so here.
    """
    where: dict[str, dict[str, int]] = {}
    for r in rows:
        for m in r.get("machines", ()):
            counts = where.setdefault(m or "not recorded (older results)", {})
            counts[r["label"]] = counts.get(r["label"], 0) + 1
    parts = [f"{m}: " + ", ".join(f"{label} ({n})" for label, n in counts.items()) for m, counts in where.items()]
    return "Runs by machine: " + "; ".join(parts) + "."


def ablation_table(variants: dict[str, Sequence[str]], method: str = "gns", scale: float = 100.0) -> list[str]:
    """Markdown rows of an agent-training ablation: one row per variant, each trained with several agent seeds.

    ``variants`` maps a label to the ``compare`` workdirs of its agent seeds (one agent each, deployed on the same
    evaluation seeds). Per variant: the probe of the last update (mean over agent seeds), the deployed test metric
    as mean ± sample std over all deployments and per agent seed, deployments that diverged, and the mean agent
    training time.
    """
    lines = ["| variant | agent seeds | probe spread | d mu / d log10 alpha | mu late - early | deployed test, all "
             "(mean ± std) | per agent seed | diverged | agent training (min) |", "|---" * 9 + "|"]
    for label, workdirs in variants.items():
        probes, tests, per_seed, diverged, minutes = [], [], [], 0, []
        for workdir in workdirs:
            runs = load_runs(workdir).get(method, [])
            if not runs:
                continue
            seed_tests = [r["test_metric"] for r in runs]
            tests += seed_tests
            per_seed.append(f"{np.mean(_numbers(seed_tests)) * scale:.2f}")
            diverged += sum(bool(r.get("diverged")) for r in runs)
            probes.append(agent_probe(workdir, method))
            selected = read_json(os.path.join(workdir, "tune", method, "selected.json")) or {}
            minutes.append(float(selected.get("tuning_wall_seconds", 0.0)) / 60)
        if not tests:
            continue
        probe = {k: np.mean([p[k] for p in probes if k in p]) for k in ("probe_spread", "probe_slope",
                                                                          "probe_late_minus_early")}
        mean, std = _stats(tests)
        lines.append(f"| {label} | {len(per_seed)} | {probe['probe_spread']:.4f} | {probe['probe_slope']:+.4f} | "
                     f"{probe['probe_late_minus_early']:+.4f} | {mean * scale:.2f} ± {std * scale:.2f} "
                     f"({len(tests)} runs) | {', '.join(per_seed)} | {diverged} | {np.mean(minutes):.0f} |")
    return lines


def describe_setting(config: ml_collections.ConfigDict) -> str:
    """One paragraph: the experiment a report is about (from its config)."""
    cc, a = config.compare, config.agent
    steps, k = int(config.steps), int(config.decision_interval)
    episodes = int(cc.agent_episodes) or int(a.episodes)
    sp = cc.space
    methods = set(cc.methods)
    searches = []  # only the search spaces of the methods the experiment runs
    if methods & {"constant", "polynomial", "cosine"}:
        searches.append(f"Eq. 7 grid: alpha_max {tuple(sp.alpha_max)}, mu {tuple(sp.mu)}, eta1 {tuple(sp.eta1)}, "
                        f"eta2 {tuple(sp.eta2)}, p {tuple(sp.power)}.")
    if methods & {"adam_hd", "sgd_hd"}:
        searches.append(f"HD: alpha_0 {tuple(cc.hd.alpha0)}, beta {tuple(cc.hd.beta)}.")
    if "cmaes" in methods:
        searches.append(f"CMA-ES: {int(cc.cma.evaluations)} evaluations.")
    agents = []
    if methods & set(AGENT_METHODS):
        deployed = ("the policy of the best-validation training episode"
                    if cc.get("agent_selection", "last") == "best_val" else "the last agent")
        agents = [f"Agents: {episodes} training episodes, p = {a.validation_prob} (FRS, SRLS: 1.0); {deployed} is "
                  f"deployed {_deployment_start(a)}; they decide "
                  f"N = T // K = {steps // k} times and run all T steps (any last T - N K steps at the last LR) "
                  "from the baselines' initial weights of each seed."]
    return " ".join([
        f"Setting: {config.data.name}, {config.model.name} {_model_size(config)}, {config.optimizer.name},",
        f"batch {int(config.batch_size)}, T = {steps:,}, K = {k},",
        f"{int(config.data.val_size):,} validation examples drawn from the train set.",
        f"Tuning runs use seed {int(cc.tune_seed)}; evaluation seeds 0..{int(cc.num_seeds) - 1}.",
    ] + agents + searches)


def _deployment_start(agent: ml_collections.ConfigDict) -> str:
    """How deployment picks the initial learning rate: §4.3's search, or the prior's centre."""
    if int(agent.deploy_candidates) == 1:
        (centre,) = candidate_lrs(float(agent.prior_lr_min), float(agent.prior_lr_max), 1)
        return f"from the prior's centre, initial LR {centre:.2g} (no §4.3 search)"
    return f"with {int(agent.deploy_candidates)} initial-LR candidates (§4.3)"


def _model_size(config: ml_collections.ConfigDict) -> str:
    m = config.model
    if m.name == "mlp":
        return f"hidden {tuple(m.hidden)}"
    if m.name == "resnet":
        return f"depth {m.depth}"
    if m.name == "transformer":
        return os.path.basename(str(m.checkpoint).rstrip("/")) if m.checkpoint else "(offline MiniLM)"
    return ""


def report(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The CLI mode: ``<report_dir>/<report_name>.{md,csv,png}`` (default ``workdir/report.*``) from the runs."""
    if "compare" not in config:
        raise ConfigError("report needs the config's 'compare' section (the one compare ran with)")
    cc = config.compare
    title = re.sub(r"\s+", " ", f"{config.data.name}, {config.model.name} {_model_size(config)}, "
                                f"T = {int(config.steps):,}, K = {int(config.decision_interval)}")
    return write_report(workdir, out_dir=cc.report_dir or workdir, name=cc.report_name, methods=tuple(cc.methods),
                        title=title, preamble=describe_setting(config), reference=cc.reference)
