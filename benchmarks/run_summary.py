"""Where a finished run's time went: its phase line, and what each population trained.

    python3 benchmarks/run_summary.py benchmarks/runs/grid      # a run folder

Prints the run's end-to-end time and `run.json`'s `phases_s` (data, probe, planning, capture,
training, evaluation, storage, report, other), the costs `hpstudy status` shows, then one line
per population: its trials, the epochs it ran (its slowest member's), its model-epochs, its
training wall time (the sum of its trials' shares) and its live members per epoch. The store
keeps no population, so trials are grouped by (topology, batch size, seed): one population each
when one engine call holds a whole seed, as the grid's `batch = 375` does for one seed. Live
members per epoch are read from each trial's epochs: a member trains until it stops.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import hpstudy
from hpstudy.config.choices import TOPOLOGIES
from hpstudy.errors import UserError
from hpstudy.storage import TrialStatus
from hpstudy.storage.rundir import load_trials, read_run_info


def live_per_epoch(epochs: list[int]) -> list[int]:
    """Members still training in each epoch 1..max, from each member's epochs run."""
    return [sum(e >= epoch for e in epochs) for epoch in range(1, max(epochs, default=0) + 1)]


def populations(records) -> dict[tuple, list]:
    """Finished trials grouped by (topology, batch size, seed), in order of first trial."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.number):
        if r.status is TrialStatus.FINISHED:
            groups[(r.config.layer_sizes, r.config.batch_size, r.seed)].append(r)
    return groups


def summarise(run_dir: str) -> list[str]:
    info = read_run_info(run_dir)
    status = hpstudy.open_run(run_dir).status()
    options = info.get("options", {})
    lines = [
        f"run {run_dir}: study {info['study']}, {info.get('device')}, "
        f"dtype {options.get('dtype')}, cuda_graphs {options.get('cuda_graphs')}, "
        f"optimizer step {options.get('optimizer_step', 'grouped')}",
        f"  end to end {info.get('elapsed_s', float('nan')):.1f} s (this invocation); "
        f"{status['model_epochs']} model-epochs, training wall {status['wall_s']:.1f} s, "
        f"FLOP floor {status['floor_s']:.1f} s",
    ]
    phases = info.get("phases_s") or {}
    parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())
    lines.append(f"  phases_s: {parts or 'not recorded'}")
    counts = ", ".join(f"{n} {k}" for k, n in status["counts"].items() if n)
    lines.append(f"  trials: {counts or 'none'}")
    lines.append("  populations (topology, batch, seed): trials, epochs, model-epochs, wall s; "
                 "live members per epoch")  # fmt: skip
    for (sizes, batch, seed), group in populations(load_trials(run_dir)).items():
        epochs = [r.epochs for r in group]
        widths = sizes[1:-1]
        name = next((k for k, v in TOPOLOGIES.items() if v == widths), "-".join(map(str, widths)))
        live = " ".join(str(n) for n in live_per_epoch(epochs))
        lines.append(f"    {name:>12} bs {batch} seed {seed}: {len(group):4d} trials, "
                     f"{max(epochs):3d} epochs, {sum(epochs):5d} model-epochs, "
                     f"{sum(r.wall_s for r in group):7.1f} s; live {live}")  # fmt: skip
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder that `hpstudy run` wrote")
    args = parser.parse_args(argv)
    try:
        print("\n".join(summarise(args.run_dir)))
    except UserError as exc:
        print(f"run_summary: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
