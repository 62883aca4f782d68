"""The store's cost per trial outside training: enqueue, claim, heartbeat, finish, read back.

    .venv/bin/python benchmarks/storage.py [--n 375] [--rounds 3] [--population 75]

The grid study's N configurations (default all 375) are enqueued in a fresh store, claimed in one
batch (`Store.claim_many`, as the Trainer claims), beaten once (one heartbeat of every held
trial), finished one population at a time (`Store.finish_many` with 75 results, as the Trainer
stores them; the per-trial path finishes each alone) and read back (`Store.records_of`, a
population at a time, as the Trainer does; per trial on the per-trial paths). Each phase is
timed, per trial, on these paths, interleaved round by round:

- sqlite before: Optuna's per-trial methods on SQLite's defaults (rollback journal,
  synchronous=FULL): what the store did before WAL and batching;
- sqlite wal: the same per-trial methods with `backends.SQLITE_PRAGMAS` (WAL, NORMAL);
- sqlite after: WAL and the batched transactions (`storage.batched`), what the store does now;
- journal: Optuna's journal file (`journal:///...`), which has no batched path.

Results are plausible, not trained: curves of 4 to 20 epochs and a 6,000-image correctness mask
(as a grid trial on the validation split stores), the same for every path. It prints the median
ms per trial of each phase and the ratio of `before` to `after`; it never asserts (timings depend
on the disk and the machine's load; see docs/results.md for figures).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hpstudy.config.studyfile import load_study
from hpstudy.engine.results import Outcome, TrialResult
from hpstudy.storage import Store, backends, default_url
from hpstudy.tabulate.plans import grid_groups

PATHS = ("sqlite before", "sqlite wal", "sqlite after", "journal")
PHASES = ("open", "enqueue", "claim", "beat", "finish", "read")
SPLIT = {"selection": "validation", "n_train": 54_000, "n_eval": 6_000}


def plausible_results(configs, seed: int = 0) -> list[TrialResult]:
    rng = np.random.default_rng(seed)
    results = []
    for config in configs:
        epochs = int(rng.integers(4, 21))
        accuracy = list(np.clip(0.80 + np.cumsum(rng.normal(0.005, 0.01, epochs)), 0, 1))
        best = int(np.argmax(accuracy)) + 1
        results.append(TrialResult(
            config=config, outcome=Outcome.COMPLETE,
            train_loss=list(0.6 * np.exp(-0.1 * np.arange(epochs))),
            eval_loss=list(0.5 + rng.normal(0, 0.02, epochs)), eval_accuracy=accuracy,
            best_epoch=best, wall_s=float(rng.uniform(0.1, 0.5)), device="cpu", dtype="float32",
            eval_correct=rng.random(6_000) < accuracy[best - 1], engine="grouped-1",
        ))  # fmt: skip
    return results


@contextlib.contextmanager
def sqlite_defaults() -> Iterator[None]:
    """SQLite as Optuna leaves it: no pragmas on the connections opened inside the block."""
    saved = backends.SQLITE_PRAGMAS
    backends.SQLITE_PRAGMAS = ()
    try:
        yield
    finally:
        backends.SQLITE_PRAGMAS = saved


def run_path(path: str, folder: Path, configs, results, space, population: int) -> dict:
    """Seconds per phase for one path on a fresh store in `folder`."""
    url = f"journal://{folder / 'study.log'}" if path == "journal" else default_url(folder)
    seconds, clock = {}, time.perf_counter()

    def mark(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase] = now - clock
        clock = now

    with sqlite_defaults() if path == "sqlite before" else contextlib.nullcontext():
        store = Store(url, "bench")
        store._batched = store._batched and path == "sqlite after"
        store.create_or_load()
        mark("open")
        ids = store.enqueue(configs, protocol="grid", split=SPLIT, space=space)
        mark("enqueue")
        claimed = store.claim_many([[tid] for tid in ids], limit=len(ids))
        assert claimed == ids
        mark("claim")
        store.beat(ids)
        mark("beat")
        for start in range(0, len(ids), population):
            chunk = list(zip(ids[start : start + population], results[start:], strict=False))
            if store._batched:
                done = store.finish_many(chunk, n_train=54_000, digests={"f": "0" * 64})
            else:  # the Trainer before: one finish per result
                done = [store.finish(t, r, n_train=54_000, digests={"f": "0" * 64})
                        for t, r in chunk]  # fmt: skip
            assert all(done)
        mark("finish")
        for start in range(0, len(ids), population):  # as the Trainer reads them back
            store.records_of(ids[start : start + population])
        mark("read")
        if hasattr(store._rdb, "engine"):
            store._rdb.engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=375, help="trials (default: the whole grid)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--population", type=int, default=75, help="results per finish_many")
    args = parser.parse_args()
    study = load_study("grid")
    configs = [c for group in grid_groups(study) for c in group][: args.n]
    results = plausible_results(configs)
    n = len(configs)
    times: dict[str, dict[str, list[float]]] = {p: {ph: [] for ph in PHASES} for p in PATHS}
    for r in range(args.rounds):
        order = PATHS[r % len(PATHS) :] + PATHS[: r % len(PATHS)]  # interleaved, rotated
        for path in order:
            with tempfile.TemporaryDirectory() as tmp:
                for phase, s in run_path(path, Path(tmp), configs, results, study.space,
                                         args.population).items():  # fmt: skip
                    times[path][phase].append(s)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\n{n} trials, {args.rounds} rounds, populations of {args.population}; "
          "median ms per trial (open: ms per store)")  # fmt: skip
    print(f"{'phase':<8}" + "".join(f"{p:>15}" for p in PATHS) + f"{'before/after':>14}")
    medians = {p: {ph: statistics.median(v) for ph, v in times[p].items()} for p in PATHS}
    for phase in (*PHASES, "total"):

        def ms(path: str, phase: str = phase) -> float:
            if phase == "total":
                return sum(ms(path, ph) for ph in PHASES if ph != "open")
            per = 1 if phase == "open" else n
            return 1000 * medians[path][phase] / per

        ratio = ms("sqlite before") / max(ms("sqlite after"), 1e-9)
        print(f"{phase:<8}" + "".join(f"{ms(p):>15.3f}" for p in PATHS) + f"{ratio:>13.1f}x")
    whole = {p: sum(medians[p][ph] for ph in PHASES) for p in PATHS}
    print("whole study, seconds: " + ", ".join(f"{p} {s:.2f}" for p, s in whole.items()))


if __name__ == "__main__":
    main()
