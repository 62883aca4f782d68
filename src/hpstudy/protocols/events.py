"""Progress events: protocols and the trainer emit them, the CLI prints them (the library never
prints).

    >>> trainer = Trainer(..., on_event=ProgressPrinter())
    >>> isinstance(event, (StageStarted, EpochDone, Waiting, TrialLost, StageFinished))
"""

from __future__ import annotations

from dataclasses import dataclass

from hpstudy.stats.tables import StageTable


@dataclass(frozen=True)
class StageStarted:
    index: int  # 1-based
    n_stages: int | None  # None where not known in advance (search)
    name: str
    n_configs: int  # configurations x seeds the stage needs
    n_reused: int  # of those, already finished in the store


@dataclass(frozen=True)
class EpochDone:
    stage: str
    population: int  # 0-based
    n_populations: int
    epoch: int  # 1-based
    max_epochs: int
    n_members: int  # members still training in this population
    n_trials: int  # trials in this engine call
    elapsed_s: float  # since the engine call began
    progress: float  # share of the call's (upper-bound) work done, see engine.EpochEvent
    expected_progress: float = 0.0  # share of the work expected with early stopping


@dataclass(frozen=True)
class Waiting:
    n_running_elsewhere: int  # trials other processes hold


@dataclass(frozen=True)
class Claiming:
    """A worker sharing the store sizes its next claim (`hpstudy worker` prints it)."""

    n_trials: int  # the claim: at most one population and this worker's share
    n_left: int  # trials nobody holds yet
    n_workers: int  # live workers, this one included (their heartbeats)
    population: int | None  # most members of one population on this device (None: unknown)


@dataclass(frozen=True)
class TrialLost:
    """A trial this process trained was ended by another process meanwhile: this one went
    without a heartbeat for longer than the grace period (paused, a sleeping machine), so it was
    taken for dead. Its result is dropped; the study trains the trial again as another trial."""

    number: int  # the trial's number in the study
    silent_s: float  # the longest this process went without a heartbeat for it
    grace_s: float  # the grace period (--grace) after which the others take a trial for dead


@dataclass(frozen=True)
class StageFinished:
    table: StageTable


@dataclass(frozen=True)
class DataWarning:
    text: str  # one line about the data, e.g. test images that copy training images


Event = StageStarted | EpochDone | Waiting | Claiming | TrialLost | StageFinished | DataWarning
