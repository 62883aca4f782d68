"""Where a run's time goes: run.json's phase line, timed as the run goes.

    >>> phases = PhaseTimes()
    >>> with phases.timing("data"): data = prepare_data(study, options)
    >>> store = TimedStore(store, phases)          # every Store call counts as "storage"
    >>> phases.line(elapsed_s)                     # {"data": 1.2, ..., "other": 0.4}
    >>> record_phase(run_dir, "report", 3.1)       # added later (the CLI's HTML report)

`hpstudy status` shows the line; the benchmark and docs/results.md read it to say whether a run
was bound by training, storage or the report.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from hpstudy.storage import Store
from hpstudy.storage.rundir import read_run_info, update_run_info

# run.json's phase line (seconds of this invocation): what the runner times itself (data; probe:
# the matmul throughput behind the FLOP floor; storage: every call of a Store method, opening
# included; report: tables, final model and, added by `hpstudy run`, the HTML report) and what
# the engine tells (engine.phases). Other is the rest of elapsed_s: the protocol's own
# bookkeeping, progress lines, weights cached by on_results, the engine's "other".
RUN_PHASES = ("data", "probe", "planning", "capture", "training", "evaluation", "storage",
              "report", "other")  # fmt: skip
_FROM_ENGINE = ("planning", "capture", "training", "evaluation")


class PhaseTimes:
    """Seconds per phase of RUN_PHASES, added up as the run goes."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(RUN_PHASES, 0.0)

    def add_engine(self, name: str, seconds: float) -> None:
        """An engine phase (engine.phases); its "other" is left to the remainder."""
        if name in _FROM_ENGINE:
            self.seconds[name] += seconds

    @contextlib.contextmanager
    def timing(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def line(self, elapsed_s: float) -> dict[str, float]:
        """{phase: seconds}, other being what the named phases leave of `elapsed_s`."""
        named = sum(v for k, v in self.seconds.items() if k != "other")
        return {k: round(max(0.0, elapsed_s - named) if k == "other" else v, 3)
                for k, v in self.seconds.items()}  # fmt: skip


class TimedStore:
    """A Store whose method calls add their time to the storage phase (everything else is the
    store's own: attributes read through)."""

    def __init__(self, store: Store, phases: PhaseTimes):
        self._store, self._phases = store, phases

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def timed(*args, **kwargs):
            with self._phases.timing("storage"):
                return attr(*args, **kwargs)

        return timed


def record_phase(run_dir: str | Path, name: str, seconds: float) -> None:
    """Add `seconds` to phase `name` of run.json's phase line (the CLI's HTML report)."""
    phases = dict(read_run_info(run_dir).get("phases_s") or dict.fromkeys(RUN_PHASES, 0.0))
    phases[name] = round(phases.get(name, 0.0) + seconds, 3)
    update_run_info(Path(run_dir), phases_s=phases)
