"""Progress for `run` and `worker`: a bar per stage on a terminal, plain lines in a log.

>>> run_study(study, options, on_event=make_progress(quiet=False, hint=lambda: None))

On a terminal (stderr is a tty) each stage gets one tqdm bar showing the trials done, the
engine's ETA and its live members; in a log or a pipe the same facts are plain lines at a low
rate (one every 30 s, plus the last epoch); `--quiet` shows neither (data warnings and the
tables still print). The hint about a busy machine is printed once training starts, so it never
precedes an error about the input.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable

from hpstudy.usertext import shown

PIPE_EVERY_S = 30.0  # plain progress lines in a log or pipe: at most one per this many seconds


def eta_text(event) -> str:
    """'ETA ~140 s (at most 410 s)': the estimate assumes members yet to stop run as long as
    those that stopped; the bound, that every member runs max_epochs."""

    def left(done: float) -> float:
        return event.elapsed_s * (1 / done - 1) if done > 0 else float("nan")

    bound = left(event.progress)
    if event.expected_progress <= event.progress:
        return f"ETA <= {bound:.0f} s"
    return f"ETA ~{left(event.expected_progress):.0f} s (at most {bound:.0f} s)"


def busy_machine_hint(*, threads: int, cores: int, load: float) -> str | None:
    """A one-line hint when torch runs several CPU threads on a machine whose load already
    fills its cores: measured here, two threads then ran about 7x slower than one."""
    if threads < 2 or load < cores:
        return None
    return (f"note: other jobs keep this machine busy (load {load:.1f} on {cores} cores), and "
            f"torch's {threads} threads wait on each other then; --threads 1 is often several "
            "times faster")  # fmt: skip


def machine_hint(options) -> Callable[[], str | None]:
    """The busy-machine hint for a run with these options, measured when called (at the start
    of training: by then the input was accepted)."""

    def hint() -> str | None:
        if options.threads is not None or str(options.device) != "cpu":
            return None
        import torch

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return busy_machine_hint(threads=torch.get_num_threads(), cores=os.cpu_count() or 1,
                                 load=load)  # fmt: skip

    return hint


def make_progress(*, quiet: bool = False, hint: Callable[[], str | None] | None = None):
    """A bar printer on a terminal, else plain lines at a low rate; `quiet`: no progress."""
    if quiet:
        return ProgressPrinter(hint=hint, quiet=True)
    if sys.stderr.isatty():
        return BarPrinter(hint=hint)
    return ProgressPrinter(every_s=PIPE_EVERY_S, hint=hint)


class ProgressPrinter:
    """Plain progress lines on stderr: stage, population size, epoch, ETA (at most every
    `every_s`); `hint` is asked once, at the first epoch, for a line to print before it."""

    def __init__(self, stream=None, every_s: float = 2.0, hint=None, quiet: bool = False) -> None:
        # None: whatever sys.stderr is when a line is printed (a default of sys.stderr would
        # bind the stream of import time, which test capture may have closed since).
        self.stream, self.every_s, self.last = stream, every_s, None
        self.hint, self.quiet = hint, quiet

    def __call__(self, event) -> None:
        from hpstudy.protocols.events import (
            DataWarning,
            EpochDone,
            StageFinished,
            StageStarted,
            TrialLost,
            Waiting,
        )

        if isinstance(event, DataWarning):
            self.say(f"warning: {event.text}")
        elif isinstance(event, TrialLost):  # even with --quiet: a result was dropped
            self.say(lost_text(event))
        elif isinstance(event, EpochDone):
            if self.hint is not None:
                hint, self.hint = self.hint(), None  # once, when training has started
                if hint:
                    self.say(hint)
            if not self.quiet:
                self.epoch(event)
        elif isinstance(event, StageFinished):
            self.finished(event)
        elif self.quiet:
            return
        elif isinstance(event, StageStarted):
            self.started(event)
        elif isinstance(event, Waiting):
            now = time.monotonic()
            if self.last is None or now - self.last >= 10 * self.every_s:
                self.last = now
                self.say(f"  waiting for {event.n_running_elsewhere} trials other processes run")

    def started(self, event) -> None:
        self.say(stage_text(event))

    def epoch(self, event) -> None:
        now = time.monotonic()
        last = event.population == event.n_populations - 1 and event.epoch == event.max_epochs
        if self.last is not None and now - self.last < self.every_s and not last:
            return
        self.last = now
        self.say(
            f"  {event.stage}: population {event.population + 1}/{event.n_populations} "
            f"({event.n_members} members), epoch {event.epoch}/{event.max_epochs}, "
            f"{event.elapsed_s:.0f} s, {eta_text(event)}"
        )

    def finished(self, event) -> None:
        from hpstudy.stats.tables import format_table

        print(format_table(printable_table(event.table), limit=15), flush=True)
        print(flush=True)

    def say(self, line: str) -> None:
        # Lines quote stage names and data warnings, which name the user's data file: escaped.
        print(shown(line), file=self.stream or sys.stderr, flush=True)


def printable_table(table):
    """`table` with its text escaped (`shown`) for `format_table`: the stage's title comes from
    the study file and its labels and rule from the study and the store. Escaped before the
    table measures its columns, so the columns still line up."""
    rows = tuple(dataclasses.replace(r, label=shown(r.label),
                                     outcomes=tuple(map(shown, r.outcomes)))
                 for r in table.rows)  # fmt: skip
    return dataclasses.replace(table, title=shown(table.title), name=shown(table.name),
                               factor=shown(table.factor), selection=shown(table.selection),
                               rule=shown(table.rule), rows=rows)  # fmt: skip


def stage_text(event) -> str:
    """'stage 2/4 optimizer: 3 trials, 1 already in the store'."""
    of = f"/{event.n_stages}" if event.n_stages else ""
    stage = f"stage {event.index}{of} " if event.index else ""  # 0: not a numbered stage
    return f"{stage}{event.name}: {event.n_configs} trials, {event.n_reused} already in the store"


def lost_text(event) -> str:
    """'trial 17 was given up while this process was paused (no heartbeat for 95 s, grace 30
    s); its result is dropped, the study trains it again as another trial'."""
    if event.silent_s > event.grace_s:
        why = (f"while this process was paused (no heartbeat for {event.silent_s:.0f} s, grace "
               f"{event.grace_s:.0f} s)")  # fmt: skip
    else:  # not by the heartbeats this process measured: another clock, a rerun's clean-up
        why = "by another process that took this one for dead"
    return (f"trial {event.number} was given up {why}; its result is dropped, the study trains "
            "it again as another trial")  # fmt: skip


class BarPrinter(ProgressPrinter):
    """One tqdm bar per stage on a terminal: trials done of those to train, the population and
    epoch, live members and the engine's ETA (tqdm's own rate-based ETA is left out: the
    engine's accounts for early stopping)."""

    def __init__(self, stream=None, hint=None) -> None:
        super().__init__(stream, hint=hint)
        self.bar = None
        self.base = 0.0  # trials of this stage's finished engine calls
        self.call = (0.0, 0)  # (progress, n_trials) of the engine call under way

    def started(self, event) -> None:
        from tqdm import tqdm

        self.close()
        self.base, self.call = 0.0, (0.0, 0)
        self.bar = tqdm(total=max(event.n_configs - event.n_reused, 0),
                        desc=shown(stage_text(event)), file=self.stream or sys.stderr,
                        leave=True, dynamic_ncols=True,
                        bar_format="{desc} |{bar}| {n:.0f}/{total} {postfix}")  # fmt: skip

    def epoch(self, event) -> None:
        if self.bar is None:
            return super().epoch(event)
        progress, n_trials = self.call
        if event.progress < progress:  # a new engine call of the same stage
            self.base += n_trials
        self.call = (event.progress, event.n_trials)
        self.bar.n = min(self.base + event.progress * event.n_trials, self.bar.total)
        self.bar.set_postfix_str(
            f"population {event.population + 1}/{event.n_populations}, epoch "
            f"{event.epoch}/{event.max_epochs}, {event.n_members} live, {eta_text(event)}"
        )  # set_postfix_str refreshes the bar

    def finished(self, event) -> None:
        self.close()
        super().finished(event)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.n = self.bar.total if self.call[0] >= 1 else self.bar.n
            self.bar.close()
            self.bar = None

    def say(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(shown(line), file=self.stream or sys.stderr)
