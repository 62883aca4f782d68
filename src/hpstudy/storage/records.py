"""Stored trials as immutable records: what `hpstudy.storage` reads back from Optuna.

    >>> from hpstudy.storage.rundir import load_trials
    >>> record = load_trials("runs/paper")[0]
    >>> record.status, record.outcome, record.config, record.eval_accuracy, record.best_epoch

A record is built from an Optuna `FrozenTrial` whose user attributes hpstudy wrote: identity
(`key`, `config`, `seed`, `protocol`, `split`) when the trial is enqueued, and one `result` dict
(curves, best epoch, outcome, wall time, device, dtype, versions, data digests) when it finishes.
"""

from __future__ import annotations

import base64
import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpstudy import __version__
from hpstudy.config.config import Config
from hpstudy.engine.results import Outcome, TrialResult
from hpstudy.errors import UserError

SCHEMA_VERSION = 1  # of the user attributes hpstudy writes on each trial


class TrialStatus(enum.Enum):
    """Where a stored trial stands (Optuna's state, read in hpstudy's terms)."""

    WAITING = "waiting"  # enqueued, not yet claimed
    RUNNING = "running"  # claimed by a live (or not yet detected dead) process
    FINISHED = "finished"  # has a result and an outcome
    INTERRUPTED = "interrupted"  # its process died; the configuration is trained again
    DISCARDED = "discarded"  # a duplicate enqueued by a concurrent worker; never trained

    @property
    def is_finished(self) -> bool:
        return self is TrialStatus.FINISHED


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial, immutable. Accuracies are fractions in [0, 1]; epochs are 1-based."""

    number: int  # Optuna's trial number within the study
    trial_id: int  # Optuna's storage-wide trial id
    key: str  # identity: hash of configuration (with seed) and split
    config: Config
    protocol: str  # "staged", "grid" or "search"
    split: dict  # the data split: selection, sizes, validation seed, normalisation
    status: TrialStatus
    outcome: Outcome | None = None  # None unless FINISHED
    train_loss: tuple[float, ...] = ()
    eval_loss: tuple[float, ...] = ()  # on the selection split (test for the paper protocol)
    eval_accuracy: tuple[float, ...] = ()
    best_epoch: int = 0
    wall_s: float = 0.0  # this trial's share of its population's training wall time
    device: str = ""
    dtype: str = ""
    n_train: int = 0  # training examples per epoch
    versions: dict = field(default_factory=dict)  # hpstudy, torch, engine (since engine 1)
    data_digests: dict = field(default_factory=dict)  # canonical file name -> SHA-256
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None
    worker: str = ""  # 'host:pid' of the process that claimed it last ("" before workers)
    # Which evaluation images the best epoch got right, packed (`pack_correct`); None for
    # trials stored before it was kept. Read it with `correct_mask`.
    eval_correct: dict | None = field(default=None, repr=False, compare=False)

    @property
    def correct_mask(self) -> np.ndarray | None:
        """(N,) bool over the evaluation split at the best epoch, or None if not stored."""
        return None if self.eval_correct is None else unpack_correct(self.eval_correct)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def best_accuracy(self) -> float:
        return self.eval_accuracy[self.best_epoch - 1] if self.best_epoch else float("nan")

    @property
    def is_usable(self) -> bool:
        """Finished with a fair number to rank (complete or pruned; not diverged or failed)."""
        return self.status.is_finished and self.outcome is not None and self.outcome.is_usable


def pack_correct(mask: np.ndarray) -> dict:
    """A per-image correctness mask as JSON: 10,000 images take 1,668 characters."""
    mask = np.asarray(mask, dtype=bool)
    return {"n": int(mask.size), "bits": base64.b64encode(np.packbits(mask)).decode("ascii")}


def unpack_correct(packed: dict) -> np.ndarray:
    bits = np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8)
    return np.unpackbits(bits, count=int(packed["n"])).astype(bool)


# The Optuna state Store.finish() gives each outcome (all others: COMPLETE).
def objective_value(best_accuracy: float) -> float:
    """The value Optuna ranks a trial by: its best accuracy, 0 where it diverged before any
    epoch finished (nan), so it ranks last."""
    return best_accuracy if best_accuracy == best_accuracy else 0.0


def final_state(outcome: Outcome) -> TrialState:
    """The Optuna state `Store.finish` gives a trial with this outcome."""
    return TrialState.PRUNED if outcome is Outcome.PRUNED else TrialState.COMPLETE


def record_from_trial(trial: optuna.trial.FrozenTrial) -> TrialRecord | None:
    """A TrialRecord from an Optuna trial; None for trials hpstudy did not write."""
    attrs = trial.user_attrs
    if "key" not in attrs:
        return None
    if attrs.get("hpstudy_schema", SCHEMA_VERSION) > SCHEMA_VERSION:
        raise UserError(
            f"trial {trial.number} was written by a newer hpstudy (schema "
            f"{attrs['hpstudy_schema']}); upgrade hpstudy to read this store"
        )
    result = attrs.get("result")
    if trial.state == TrialState.WAITING:
        status = TrialStatus.WAITING
    elif trial.state == TrialState.RUNNING:
        status = TrialStatus.RUNNING
    elif "discarded" in attrs:
        status = TrialStatus.DISCARDED
    elif result is not None and trial.state == final_state(Outcome(result["outcome"])):
        # The state finish() sets for this outcome: a result whose trial was then failed by
        # fail_stale (killed between the two writes) is interrupted, not finished.
        status = TrialStatus.FINISHED
    else:
        status = TrialStatus.INTERRUPTED
    base = {
        "number": trial.number,
        "trial_id": trial._trial_id,
        "key": attrs["key"],
        "config": Config.from_dict(attrs["config"]),
        "protocol": attrs.get("protocol", ""),
        "split": attrs.get("split", {}),
        "status": status,
        "datetime_start": trial.datetime_start,
        "datetime_complete": trial.datetime_complete,
        "worker": attrs.get("worker", ""),
    }
    if status is not TrialStatus.FINISHED:
        return TrialRecord(**base)

    def floats(name: str) -> tuple[float, ...]:
        return tuple(float("nan") if v is None else float(v) for v in result.get(name, []))

    return TrialRecord(
        **base,
        outcome=Outcome(result["outcome"]),
        train_loss=floats("train_loss"),
        eval_loss=floats("eval_loss"),
        eval_accuracy=floats("eval_accuracy"),
        best_epoch=int(result.get("best_epoch", 0)),
        wall_s=float(result.get("wall_s", 0.0)),
        device=result.get("device", ""),
        dtype=result.get("dtype", ""),
        n_train=int(result.get("n_train", 0)),
        versions=result.get("versions", {}),
        data_digests=result.get("data_digests", {}),
        eval_correct=result.get("eval_correct"),
    )


def result_payload(result: TrialResult, *, n_train: int, digests: dict) -> dict[str, Any]:
    """The `result` user attribute of a finished trial (what `records` reads back)."""
    payload = {
        "outcome": result.outcome.value,
        "train_loss": _json_floats(result.train_loss),
        "eval_loss": _json_floats(result.eval_loss),
        "eval_accuracy": _json_floats(result.eval_accuracy),
        "best_epoch": int(result.best_epoch),
        "wall_s": float(result.wall_s),
        "device": result.device,
        "dtype": result.dtype,
        "n_train": int(n_train),
        "versions": {"hpstudy": __version__, "torch": _torch_version()}
        | ({"engine": result.engine} if result.engine else {}),
        "data_digests": dict(digests),
    }
    if result.eval_correct is not None:
        payload["eval_correct"] = pack_correct(result.eval_correct)
    return payload


def _json_floats(values: Iterable[float]) -> list[float | None]:
    """JSON has no NaN or inf: a diverged loss is stored as null."""
    return [float(v) if math.isfinite(v) else None for v in values]


def _torch_version() -> str:
    import torch

    return torch.__version__
