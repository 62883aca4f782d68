"""The trial store: Optuna's RDB storage (SQLite by default, PostgreSQL for several workers).

Reading a run (what the report uses):

    >>> from hpstudy import store
    >>> records = store.load_trials("runs/paper")          # list[TrialRecord], by trial number
    >>> done = [r for r in records if r.status is store.TrialStatus.FINISHED]
    >>> done[0].config, done[0].seed, done[0].eval_accuracy, done[0].best_epoch, done[0].outcome

Writing (what protocols do, through `hpstudy.protocols.base.Trainer`):

    >>> st = Store(default_url("runs/paper"), "paper"); st.create_or_load()
    >>> ids = st.enqueue([config], protocol="staged", split=split_info, space=study.space)
    >>> if st.claim(ids[0]): st.finish(ids[0], result, n_train=60_000, digests=ds.digests)

One Optuna study per hpstudy study; one Optuna trial per (configuration, seed, split). A trial
is enqueued WAITING with its identity (`key`, `config`, `seed`, `protocol`, `split`) as user
attributes and its factors as Optuna params, claimed atomically (WAITING -> RUNNING, a row lock on
PostgreSQL), and finished by writing one `result` user attribute (curves, best epoch, outcome,
timings, device, versions, data digests) and then its state. Only the state change marks it
done, so a process killed at any moment leaves either a finished trial or one that is re-done.
Dead processes are found by Optuna's heartbeats (`fail_stale`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import random
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpstudy import __version__, interrupts
from hpstudy.engine.results import Outcome, TrialResult
from hpstudy.errors import UserError
from hpstudy.records import (
    SCHEMA_VERSION,
    TrialRecord,
    TrialStatus,
    pack_correct,
    record_from_trial,
)
from hpstudy.space import Config, topology_name

_rdb = importlib.import_module("optuna.storages._rdb.storage")
_open_session = _rdb._create_scoped_session


@contextlib.contextmanager
def _session_deferring_interrupts(*args: Any, **kwargs: Any) -> Iterator[Any]:
    """Every Optuna database session, opened and closed whole: see `hpstudy.interrupts`."""
    with interrupts.deferred(), _open_session(*args, **kwargs) as session:
        yield session


_rdb._create_scoped_session = _session_deferring_interrupts

RUN_FILE = "run.json"  # in a run folder: which storage and study it uses
HEARTBEAT_S = 5  # how often a process marks its running trials alive
GRACE_S = 30  # a running trial whose heartbeat is older than this belongs to a dead process

optuna.logging.set_verbosity(optuna.logging.WARNING)

__all__ = [
    "RUN_FILE", "Store", "TrialRecord", "TrialStatus", "default_url", "identity_attrs",
    "load_trials", "open_run", "read_run_info", "record_from_trial", "redact_args", "redact_url",
    "trial_key",
]  # fmt: skip


def trial_key(config: Config, split: dict) -> str:
    """A trial's identity: the same configuration, seed and split is the same trial."""
    blob = json.dumps({"config": config.to_dict(), "split": split}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def topology_param(hidden: tuple[int, ...]) -> str:
    return topology_name(tuple(hidden)) or "-".join(map(str, hidden))


def params_of(config: Config) -> dict[str, Any]:
    """The Optuna params of a configuration (what the dashboard and fANOVA see)."""
    return {
        "topology": topology_param(config.topology),
        "optimizer": config.optimizer,
        "lr": config.lr,
        "activation": config.activation,
    }


def distributions_of(space: dict[str, tuple]) -> dict[str, CategoricalDistribution]:
    choices = {
        "topology": [topology_param(t) for t in space["topology"]],
        "optimizer": list(space["optimizer"]),
        "lr": list(space["lr"]),
        "activation": list(space["activation"]),
    }
    return {name: CategoricalDistribution(values) for name, values in choices.items()}


def default_url(run_dir: str | Path) -> str:
    """The SQLite URL of a run folder's study.db. Built, not formatted: '?', '#' and '%' in a
    folder name are quoted, so the URL names that file and no other."""
    from sqlalchemy.engine import URL

    path = Path(run_dir).resolve() / "study.db"
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def check_durable(url: str) -> None:
    """Refuse a storage that forgets everything when the process ends (SQLite in memory)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # _open_storage says what is wrong with it
    in_memory = parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed)
    if parsed.get_backend_name() == "sqlite" and in_memory:
        raise UserError(f"storage {url!r} keeps nothing after the process ends; give --storage "
                        "a file (sqlite:////path/study.db) or a database server, or leave "
                        "--storage out to use study.db in the run folder")  # fmt: skip


def sqlite_file(url: str) -> str:
    """The file a SQLite URL names (for messages); the redacted URL for other storages."""
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            return parsed.database
    return redact_url(url)


def explain_storage_error(exc: BaseException, url: str) -> UserError | None:
    """One line for what SQLite or the database server said, naming the file and the fix;
    None when `exc` is not a storage error."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return None
    where, reason = sqlite_file(url), str(exc.orig or exc).splitlines()[0]
    lower = reason.lower()
    if "malformed" in lower or "not a database" in lower or "corrupt" in lower:
        todo = ("move it aside and rerun `hpstudy run` with the same --out to start the study "
                "again, or put back a copy from a backup")  # fmt: skip
        return UserError(f"{where} is damaged ({reason}); {todo}")
    if "full" in lower or "disk i/o" in lower:
        return UserError(f"cannot write {where} ({reason}); free some space and rerun the same "
                         "command: finished trials are kept")  # fmt: skip
    if "readonly" in lower or "read-only" in lower or "unable to open" in lower:
        return UserError(f"cannot write {where} ({reason}); make it and its folder writable, "
                         "or give --out a folder you can write to")  # fmt: skip
    return UserError(f"storage {where} failed ({reason}); check it and rerun the same command")


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn a storage failure inside the block into one UserError line (the CLI prints it)."""
    try:
        yield
    except Exception as exc:
        error = explain_storage_error(exc, url)
        if error is None:
            raise
        raise error from exc


class Store:
    """One hpstudy study in an Optuna storage: enqueue, claim, finish, read."""

    def __init__(
        self, url: str, study_name: str, *, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S
    ) -> None:
        check_durable(url)
        self.url, self.study_name = url, study_name
        self.held: set[int] = set()  # trials this process claimed and has not ended
        heartbeat_s = max(1, min(heartbeat_s, grace_s // 3))  # several beats per grace period
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # Writers wait for each other instead of failing with "database is locked".
            kwargs = {"connect_args": {"timeout": 60}}
        url = _with_driver(url)
        self.storage = _open_storage(url, kwargs, heartbeat_s, grace_s)
        self._study: optuna.Study | None = None

    # -- the study ---------------------------------------------------------------------------

    def create_or_load(self, sampler: optuna.samplers.BaseSampler | None = None) -> bool:
        """Open the study, creating it if needed; True if this call created it (atomically)."""
        created = True
        try:
            self.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], self.study_name)
        except optuna.exceptions.DuplicatedStudyError:
            created = False
        self._study = optuna.load_study(
            study_name=self.study_name, storage=self.storage, sampler=sampler
        )
        return created

    def exists(self) -> bool:
        names = {s.study_name for s in self.storage.get_all_studies()}
        return self.study_name in names

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            if not self.exists():
                raise UserError(
                    f"no study {self.study_name!r} in {redact_url(self.url)}; run "
                    f"`hpstudy run` first or check the name"
                )
            self._study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        return self._study

    def delete(self) -> None:
        """Remove the study and all its trials (`--fresh`)."""
        if self.exists():
            optuna.delete_study(study_name=self.study_name, storage=self.storage)
        self._study = None

    def get_meta(self, key: str, default: Any = None) -> Any:
        return self.study.user_attrs.get(key, default)

    def get_meta_prefixed(self, prefix: str) -> dict[str, Any]:
        """Study attributes whose key starts with `prefix`, keyed by the rest of the key."""
        attrs = self.study.user_attrs
        return {k.removeprefix(prefix): v for k, v in attrs.items() if k.startswith(prefix)}

    def set_meta(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    # -- writing trials ----------------------------------------------------------------------

    def enqueue(
        self, configs: Sequence[Config], *, protocol: str, split: dict, space: dict[str, tuple]
    ) -> list[int]:
        """Add WAITING trials (identity and params written with the trial, in one go)."""
        distributions = distributions_of(space)
        ids = []
        for config in configs:
            template = optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=params_of(config),
                distributions=distributions,
                user_attrs=identity_attrs(config, protocol=protocol, split=split),
            )
            ids.append(self.storage.create_new_trial(self.study._study_id, template))
        return ids

    def claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING, atomically; False if another process got there first."""
        try:
            claimed = self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        if claimed:
            self.held.add(trial_id)
            self.storage.record_heartbeat(trial_id)
        return claimed

    def discard(self, trial_id: int, reason: str) -> None:
        """Give up a claimed duplicate: it stays in the store as FAIL with `discarded` set."""
        self.storage.set_trial_user_attr(trial_id, "discarded", reason)
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        self.held.discard(trial_id)

    def report(self, trial_id: int, epoch: int, accuracy: float) -> None:
        """One intermediate value (used by pruners)."""
        self.storage.set_trial_intermediate_value(trial_id, epoch, accuracy)

    def finish(self, trial_id: int, result: TrialResult, *, n_train: int, digests: dict) -> bool:
        """Write the result, then the state (the state change is what makes it count).

        False if the trial was already ended by another process that took this one for dead
        (its heartbeats came late): that process trains the configuration again instead.
        """
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
            "versions": {"hpstudy": __version__, "torch": _torch_version()},
            "data_digests": dict(digests),
        }
        if result.eval_correct is not None:
            payload["eval_correct"] = pack_correct(result.eval_correct)
        best = result.best_accuracy
        value = best if best == best else 0.0  # diverged before any epoch: rank it last
        if result.outcome is Outcome.FAILED:
            state, values = TrialState.FAIL, None
        elif result.outcome is Outcome.PRUNED:
            state, values = TrialState.PRUNED, [value]
        else:
            state, values = TrialState.COMPLETE, [value]
        try:
            self.storage.set_trial_user_attr(trial_id, "result", payload)
            done = self.storage.set_trial_state_values(trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            done = False
        self.held.discard(trial_id)
        return done

    def fail_stale(self, *, all_running: bool = False) -> int:
        """Mark trials of dead processes FAIL (interrupted); returns how many.

        `all_running`: every RUNNING trial is stale (the caller holds the run folder's lock and
        the store is private to that folder). Otherwise Optuna's heartbeat grace period decides.
        """
        if all_running:
            ids = [t._trial_id for t in self.study.get_trials(False, states=(TrialState.RUNNING,))]
        else:
            ids = self.storage._get_stale_trial_ids(self.study._study_id)
        n = 0
        for trial_id in ids:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                n += bool(self.storage.set_trial_state_values(trial_id, TrialState.FAIL))
        return n

    def fail_running(self, trial_ids: Iterable[int]) -> None:
        """Mark this process's trials interrupted (training raised or was stopped)."""
        for trial_id in list(trial_ids):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            self.held.discard(trial_id)

    def release_held(self) -> None:
        """Mark every trial this process still holds interrupted (it is stopping)."""
        self.fail_running(self.held)

    @contextlib.contextmanager
    def heartbeat(self, trial_ids: Iterable[int]) -> Iterator[None]:
        """Keep these trials marked alive while the block runs (a background thread)."""
        ids, stop = list(trial_ids), threading.Event()
        interval = self.storage.get_heartbeat_interval() or HEARTBEAT_S

        def beat() -> None:
            while not stop.wait(interval):
                for trial_id in ids:
                    with contextlib.suppress(Exception):  # a finished trial needs none
                        self.storage.record_heartbeat(trial_id)

        thread = threading.Thread(target=beat, name="hpstudy-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # -- reading -----------------------------------------------------------------------------

    def frozen_trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def records(self) -> list[TrialRecord]:
        """Every hpstudy trial in the study, by trial number."""
        return [r for t in self.frozen_trials() if (r := record_from_trial(t)) is not None]

    def finished(self) -> dict[str, TrialRecord]:
        """key -> the finished trial (the first, should a race ever have made two)."""
        done: dict[str, TrialRecord] = {}
        for record in self.records():
            if record.status.is_finished:
                done.setdefault(record.key, record)
        return done


def _open_storage(url: str, kwargs: dict, heartbeat_s: int, grace_s: int) -> RDBStorage:
    """RDBStorage, retried: workers starting together on an empty database race to create
    Optuna's tables, and all but one see a unique-constraint error the first time."""
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s,
                                  grace_period=grace_s)  # fmt: skip
        except ImportError as exc:
            raise UserError(f"cannot open storage {redact_url(url)!r}: {exc}; for PostgreSQL "
                            "`pip install 'hpstudy[postgres]'`") from exc  # fmt: skip
        except Exception as exc:  # sqlalchemy's OperationalError, IntegrityError and friends
            if attempt == 5 or ("exists" not in str(exc) and "duplicate" not in str(exc)):
                if url.startswith("sqlite") and (error := explain_storage_error(exc, url)):
                    raise error from exc
                first = str(exc).splitlines()[0]
                raise UserError(f"cannot open storage {redact_url(url)!r}: {first}; check the "
                                "URL and that the database server is running") from exc  # fmt: skip
            time.sleep(0.2 + random.random() * attempt)
    raise AssertionError("unreachable")


def _with_driver(url: str) -> str:
    """Name an installed PostgreSQL driver: SQLAlchemy 2.1 defaults to psycopg 3, hpstudy's extra
    installs psycopg2-binary."""
    import importlib.util

    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            rest = url.removeprefix(prefix)
            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
                return "postgresql+psycopg2://" + rest
            return "postgresql://" + rest
    return url


def identity_attrs(config: Config, *, protocol: str, split: dict) -> dict[str, Any]:
    """The user attributes that say which trial this is (written once, with the trial)."""
    return {
        "hpstudy_schema": SCHEMA_VERSION,
        "key": trial_key(config, split),
        "config": config.to_dict(),
        "seed": config.seed,
        "protocol": protocol,
        "split": split,
    }


def redact_url(url: str) -> str:
    """The storage URL without its password, fit for run.json, reports and messages.

        >>> redact_url("postgresql://u:s3cret@host/db")
        'postgresql://u@host/db'

    A URL without a password (sqlite:///..., postgresql://u@host/db) comes back unchanged; one
    SQLAlchemy cannot parse comes back as it is (no store could have been opened with it).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.password is None and "password" not in parsed.query:
        return url  # as given: rendering would re-quote some URLs (e.g. ?host=/tmp/sock)
    # URL.set() ignores None values; SQLAlchemy documents _replace() for clearing a field.
    parsed = parsed._replace(password=None).difference_update_query(["password"])
    return parsed.render_as_string(hide_password=False)


def redact_args(args: Sequence[str], url: str | None) -> list[str]:
    """A command line with the storage URL's password removed wherever the URL appears
    (`--storage URL` and `--storage=URL`)."""
    safe = redact_url(url) if url else url
    if not url or safe == url:
        return list(args)
    return [arg.replace(url, safe) for arg in args]


def _json_floats(values: Iterable[float]) -> list[float | None]:
    """JSON has no NaN or inf: a diverged loss is stored as null."""
    return [float(v) if math.isfinite(v) else None for v in values]


def _torch_version() -> str:
    import torch

    return torch.__version__


# -- run folders -----------------------------------------------------------------------------


def read_run_info(run_dir: str | Path) -> dict:
    """The run folder's `run.json`: study name, storage URL, device, options."""
    path = Path(run_dir) / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{run_dir} is not an hpstudy run folder (no {RUN_FILE}); give the "
            "folder `hpstudy run` wrote, such as runs/paper"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; {_REWRITE_RUN_FILE}") from exc
    _check_run_info(info, path)
    if info.get("schema_version", 0) > SCHEMA_VERSION:
        raise UserError(f"{path} was written by a newer hpstudy; upgrade hpstudy to read it")
    return info


_REWRITE_RUN_FILE = ("rerun `hpstudy run` with the same study and --out to rewrite it (finished "
                     "trials in the store are kept)")  # fmt: skip
_RUN_INFO_SHAPE = {"study": str, "study_toml": str, "split": dict, "overrides": dict}


def _check_run_info(info: Any, path: Path) -> None:
    """run.json must be the object `hpstudy run` writes, as far as readers rely on it."""
    if not isinstance(info, dict):
        problem = f"a JSON object, got {type(info).__name__}"
    else:
        # "study" is what every reader needs; the rest, where present, must have its type.
        wrong = [k for k, t in _RUN_INFO_SHAPE.items()
                 if (k == "study" or k in info) and not isinstance(info.get(k), t)]  # fmt: skip
        if not wrong:
            return
        kind = _RUN_INFO_SHAPE[wrong[0]].__name__
        problem = f"{wrong[0]!r} to be a {kind}, got {info.get(wrong[0])!r}"[:200]
    raise UserError(f"{path} is damaged: expected {problem}; {_REWRITE_RUN_FILE}")


def open_run(run_dir: str | Path, storage: str | None = None) -> Store:
    """The Store of a run folder: `storage` (a URL) if given, else the storage URL its run.json
    recorded, else its SQLite file.

    run.json keeps the URL without its password (`redact_url`), so PostgreSQL then takes the
    password from PGPASSWORD or ~/.pgpass; a login that fails says so, and how to fix it.
    """
    info = read_run_info(run_dir)
    if storage:
        return Store(storage, info["study"])
    url = info.get("storage") or default_url(run_dir)
    try:
        return Store(url, info["study"])
    except UserError as exc:
        reason = str(exc.__cause__ or exc).splitlines()[0]
        if "password" not in reason.lower():
            raise
        raise UserError(
            f"cannot log in to the storage {url!r} of {run_dir} ({reason}); run.json keeps the "
            "storage URL without its password: set PGPASSWORD or ~/.pgpass, or pass "
            "--storage URL"
        ) from exc


def load_trials(run_dir_or_url: str | Path, study: str | None = None) -> list[TrialRecord]:
    """Every trial of a run: from a run folder, or from a storage URL plus the study name."""
    text = str(run_dir_or_url)
    if "://" in text:
        if study is None:
            raise UserError(f"give the study name to read {text!r} (a storage may hold several)")
        return Store(text, study).records()
    return open_run(run_dir_or_url).records()
