"""Does TF32 cost accuracy beyond the seed-to-seed spread? Compare two runs of one grid study.

    python benchmarks/compare_precision.py runs/grid-fp32 runs/grid-tf32

For every configuration trained with the same seeds in both runs: the mean best accuracy over
seeds in each run, their difference, and the configuration's seed-to-seed standard deviation.
Prints the mean and largest |difference| next to the median standard deviation, and each run's
best configuration.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

from hpstudy.runner.status import run_status as status


def accuracies(run_dir: str) -> dict[str, dict[int, float]]:
    """configuration (as text) -> seed -> best accuracy, finished trials only."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for trial in status(run_dir)["trials"]:
        if trial["best_accuracy"] is not None:
            config = dict(trial["config"])
            config.pop("seed", None)
            out[str(sorted(config.items()))][trial["seed"]] = trial["best_accuracy"]
    return out


def main(first: str, second: str) -> None:
    a, b = accuracies(first), accuracies(second)
    diffs, spreads = [], []
    for config in sorted(a.keys() & b.keys()):
        seeds = sorted(a[config].keys() & b[config].keys())
        if len(seeds) < 2:
            continue
        xs, ys = [a[config][s] for s in seeds], [b[config][s] for s in seeds]
        diffs.append(statistics.fmean(ys) - statistics.fmean(xs))
        spreads.append(statistics.stdev(xs))
    if not diffs:
        sys.exit("no configuration has two or more seeds finished in both runs")
    print(f"{len(diffs)} configurations with shared seeds")
    print(f"mean difference (second - first): {100 * statistics.fmean(diffs):+.3f} pp")
    print(
        f"mean |difference|: {100 * statistics.fmean(map(abs, diffs)):.3f} pp, "
        f"largest {100 * max(map(abs, diffs)):.3f} pp"
    )
    print(f"median seed-to-seed std (first run): {100 * statistics.median(spreads):.3f} pp")
    for run_dir in (first, second):
        best = status(run_dir)["best"]
        if best:
            print(f"{run_dir}: best {best['config']} {100 * best['accuracy']:.2f}% (n={best['n']})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
