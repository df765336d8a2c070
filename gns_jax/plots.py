"""Figure-3-style plots of learning-rate trajectories (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure  # no pyplot: works under any backend and leaves a notebook's alone


def plot_lr_trajectories(trajectories: Mapping[str, Sequence[float]], decision_interval: int, path: str,
                         title: str = "Learning rate", highlight: Sequence[str] = ()) -> str:
    """One line per trajectory: learning rate (log scale) against optimizer steps; ``highlight`` drawn bold.

    Many trajectories (e.g. 30 episodes) are drawn thin and coloured from early (light) to late (dark).
    """
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    names = [n for n in trajectories if n not in highlight]
    cmap = mpl.colormaps["viridis"]
    for i, name in enumerate(names):
        lrs = trajectories[name]
        steps = [j * decision_interval for j in range(len(lrs))]
        color = cmap(0.15 + 0.7 * i / max(1, len(names) - 1))
        ax.step(steps, lrs, where="post", lw=1.0, alpha=0.8, color=color, label=name if len(names) <= 10 else None)
    for name in highlight:
        lrs = trajectories[name]
        ax.step([j * decision_interval for j in range(len(lrs))], lrs, where="post", lw=2.5, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    if len(names) > 10:
        sm = ScalarMappable(cmap=cmap, norm=Normalize(1, len(names)))
        fig.colorbar(sm, ax=ax, label="episode")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_schedule_comparison(runs: Mapping[str, Mapping], path: str, metric_name: str = "accuracy",
                             title: str = "") -> str:
    """Two panels over optimizer steps: each run's learning rate (log scale) and its validation curve.

    ``runs[name]`` holds ``lr_steps``/``lr_curve`` (drawn as steps when ``lr_per_step`` is false: a learning rate
    held for each decision interval) and ``val_steps``/``val_curve``.
    """
    fig = Figure(figsize=(10, 4))
    ax_lr, ax_val = fig.subplots(1, 2)
    for i, (name, run) in enumerate(runs.items()):
        color = f"C{i}"
        if run.get("lr_per_step", False):
            ax_lr.plot(run["lr_steps"], run["lr_curve"], lw=2, color=color, label=name)
        else:
            ax_lr.step(run["lr_steps"], run["lr_curve"], where="post", lw=2, color=color, label=name)
        ax_val.plot(run["val_steps"], run["val_curve"], marker="o", ms=3, lw=1.5, color=color,
                    label=f"{name}: {run['val_curve'][-1]:.4f}")
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("Learning rate")
    ax_val.set_xlabel("optimizer step")
    ax_val.set_ylabel(f"validation {metric_name}")
    ax_val.set_title(f"Validation {metric_name}")
    for ax in (ax_lr, ax_val):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
