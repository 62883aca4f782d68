"""Progress lines on stderr for `run` and `worker`: stage, population, epoch and an ETA.

>>> run_study(study, options, on_event=ProgressPrinter())
"""

from __future__ import annotations

import sys
import time


def eta_text(event) -> str:
    """'ETA ~140 s (at most 410 s)': the estimate assumes members yet to stop run as long as
    those that stopped; the bound, that every member runs max_epochs."""

    def left(done: float) -> float:
        return event.elapsed_s * (1 / done - 1) if done > 0 else float("nan")

    bound = left(event.progress)
    if event.expected_progress <= event.progress:
        return f"ETA <= {bound:.0f} s"
    return f"ETA ~{left(event.expected_progress):.0f} s (at most {bound:.0f} s)"


class ProgressPrinter:
    """Plain progress lines on stderr: stage, population size, epoch, ETA (at most every 2 s)."""

    def __init__(self, stream=None, every_s: float = 2.0) -> None:
        # None: whatever sys.stderr is when a line is printed (a default of sys.stderr would
        # bind the stream of import time, which test capture may have closed since).
        self.stream, self.every_s, self.last = stream, every_s, 0.0

    def __call__(self, event) -> None:
        from hpstudy.protocols.events import (
            DataWarning,
            EpochDone,
            StageFinished,
            StageStarted,
            Waiting,
        )
        from hpstudy.stats.tables import format_table

        if isinstance(event, DataWarning):
            self.say(f"warning: {event.text}")
        elif isinstance(event, StageStarted):
            of = f"/{event.n_stages}" if event.n_stages else ""
            stage = f"stage {event.index}{of} " if event.index else ""  # 0: not a numbered stage
            self.say(
                f"{stage}{event.name}: {event.n_configs} trials, "
                f"{event.n_reused} already in the store"
            )
        elif isinstance(event, EpochDone):
            now = time.monotonic()
            last = event.population == event.n_populations - 1 and event.epoch == event.max_epochs
            if now - self.last < self.every_s and not last:
                return
            self.last = now
            self.say(
                f"  {event.stage}: population {event.population + 1}/{event.n_populations} "
                f"({event.n_members} members), epoch {event.epoch}/{event.max_epochs}, "
                f"{event.elapsed_s:.0f} s, {eta_text(event)}"
            )
        elif isinstance(event, Waiting):
            now = time.monotonic()
            if now - self.last >= 10 * self.every_s:
                self.last = now
                self.say(f"  waiting for {event.n_running_elsewhere} trials other processes run")
        elif isinstance(event, StageFinished):
            print(format_table(event.table, limit=15), flush=True)
            print(flush=True)

    def say(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)
