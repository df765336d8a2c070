"""How far above the tuned cosine can any schedule evaluated on Table 20 go?

Reads every committed set of Table 20 runs (T = 78,200) that covers the 5 evaluation seeds 0-4: the baselines and
agents of ``docs/results/workdirs/``, the proxy-trained policies deployed on Table 20 and the fixed cosines of
``docs/results/proxy_fashion_mnist_mlp/``. A set that repeats another's test accuracies on every seed (the same
policy or schedule filed twice) counts once. It prints the sets ranked by mean test accuracy, the paired difference
of the best ones to the tuned cosine, and a per-seed upper bound: for each evaluation seed, the best test accuracy
of any finite set. That bound picks on the test split, so it is not a method; it only says what no choice among
these schedules could exceed.

    python experiments/table20_headroom.py [--top 15]
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results")
SEEDS = (0, 1, 2, 3, 4)
STEPS = 78_200
COSINE = "workdirs/fashion_mnist_mlp/runs/cosine"


def run_sets(results: str = RESULTS) -> dict[str, dict[int, tuple[float, float]]]:
    """{set name: {seed: (test, validation)}} for every folder of seed_N.json files covering SEEDS at T = 78,200."""
    patterns = (("workdirs", "fashion_mnist_mlp*", "runs", "*"),  # first, so that a repeat keeps this name
                ("proxy_fashion_mnist_mlp", "*", "full_T78200_K2500"),
                ("proxy_fashion_mnist_mlp", "T20_*", "runs", "*"))
    sets, seen = {}, set()
    for folder in [f for p in patterns for f in sorted(glob.glob(os.path.join(results, *p)))]:
        by_seed = {}
        for path in glob.glob(os.path.join(folder, "seed_*.json")):
            with open(path) as f:
                run = json.load(f)
            if run.get("steps", STEPS) == STEPS:
                by_seed[int(os.path.basename(path)[len("seed_"):-len(".json")])] = (run["test_metric"],
                                                                                    run["val_metric"])
        key = tuple(by_seed[s][0] for s in SEEDS) if set(SEEDS) <= set(by_seed) else None
        if key is not None and key not in seen:
            seen.add(key)
            name = os.path.relpath(folder, results).removesuffix("/full_T78200_K2500")
            sets[name] = {s: by_seed[s] for s in SEEDS}
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15, help="how many sets to list")
    args = parser.parse_args()
    sets = run_sets()
    if COSINE not in sets:
        raise SystemExit(f"no tuned cosine under {RESULTS}/{COSINE}")
    cosine = sets[COSINE]
    finite = {n: r for n, r in sets.items() if min(t for t, _ in r.values()) > 0.5}
    ranked = sorted(finite, key=lambda n: -statistics.mean(finite[n][s][0] for s in SEEDS))
    print(f"{len(sets)} distinct sets of Table 20 runs on seeds {SEEDS[0]}-{SEEDS[-1]} ({len(finite)} finite)\n")
    print("| set | test | validation | paired to the cosine (standard error) |")
    print("|---|---|---|---|")
    for name in ranked[: args.top]:
        test = [100 * finite[name][s][0] for s in SEEDS]
        val = [100 * finite[name][s][1] for s in SEEDS]
        diff = [t - 100 * cosine[s][0] for t, s in zip(test, SEEDS, strict=True)]
        paired = "" if name == COSINE else (f"{statistics.mean(diff):+.2f} "
                                            f"({statistics.stdev(diff) / math.sqrt(len(SEEDS)):.2f})")
        print(f"| {name} | {statistics.mean(test):.2f} ± {statistics.stdev(test):.2f} | "
              f"{statistics.mean(val):.2f} | {paired} |")
    best = [max(100 * r[s][0] for r in finite.values()) for s in SEEDS]
    print(f"\nper-seed best of the {len(finite)} finite sets (picks on test): "
          + ", ".join(f"{b:.2f}" for b in best) + f"; mean {statistics.mean(best):.2f}")


if __name__ == "__main__":
    main()
