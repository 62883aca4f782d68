"""The run folder: its paths, its `run.json`, its lock, and the store it names.

    >>> run_dir = Path("runs/paper")
    >>> with exclusive(run_dir): ...               # one `hpstudy run` per folder at a time
    >>> info = read_run_info(run_dir)              # study, storage URL, options, split, machine
    >>> study = load_study_from_info(info, run_dir)
    >>> store = open_run(run_dir)                  # the Store run.json names
    >>> run_dir / MODEL_FILE, run_dir / REPLICATION_FILE

Everything that knows where a run keeps what lives here: the runner writes through it, and the
report, `status` and `dashboard` read through it. A run folder holds `run.json` (study, storage URL
without its password, options, split, machine), `study.db` (the default SQLite store),
`tables/` (CSV and JSON per stage), `weights/` (staged runs: cached best-epoch weights),
`final_best_model.pth`, `replication.json` (replicate runs) and the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpstudy import __version__
from hpstudy.atomic import atomic_file
from hpstudy.config.study import Study
from hpstudy.config.studyfile import parse_study
from hpstudy.errors import UserError
from hpstudy.storage import Store, TrialRecord, default_url, redact_args, redact_url
from hpstudy.storage.urls import missing_sqlite_file

if TYPE_CHECKING:
    from hpstudy.data.prepare import Data
    from hpstudy.runner.options import RunOptions

RUN_FILE = "run.json"  # in a run folder: which storage and study it uses
RUN_SCHEMA_VERSION = 1  # of run.json
MODEL_FILE = "final_best_model.pth"
REPLICATION_FILE = "replication.json"
WEIGHTS_DIR = "weights"
LOCK_FILE = ".run.lock"
OUTPUTS = ("tables", WEIGHTS_DIR, MODEL_FILE, REPLICATION_FILE)  # what --fresh deletes


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder, or say in one line why it cannot be one."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"the run folder {run_dir} is a file, not a folder; give --out a "
                        "folder path (it is created if missing)")  # fmt: skip
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder {run_dir}: {exc.strerror}; give --out "
                        "a folder you can write to") from exc  # fmt: skip
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"cannot write in the run folder {run_dir}: it is read-only; give "
                        "--out a folder you can write to")  # fmt: skip


def refuse_other_study(run_dir: Path, study: Study, options: RunOptions, store: Store) -> None:
    """A run folder holds one study: another one there is refused, or with --fresh deleted
    from the folder's own SQLite store (a shared --storage keeps it)."""
    others = set()
    if (run_dir / RUN_FILE).exists():
        with contextlib.suppress(UserError):  # a damaged run.json: this run rewrites it
            others.add(read_run_info(run_dir)["study"])
    if options.storage is None:
        others |= store.study_names()
    others.discard(study.name)
    if others and not options.fresh:
        raise UserError(f"{run_dir} holds study {sorted(others)[0]!r}; give {study.name!r} its "
                        "own --out folder, or add --fresh to delete that study's trials and "
                        "outputs there")  # fmt: skip
    if options.storage is None:
        for name in others:
            Store(store.url, name).delete()


def clear_outputs(run_dir: Path) -> None:
    """`--fresh`: delete what an earlier run wrote, only in a folder `hpstudy run` made."""
    if not (run_dir / RUN_FILE).exists():
        return  # not a run folder: a `tables/` there is the user's, not ours
    for name in OUTPUTS:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock: one `hpstudy run` per folder at a time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        handle = open(run_dir / LOCK_FILE, "w")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise UserError(f"cannot write in the run folder {run_dir}: {exc.strerror}; give --out "
                        "a folder you can write to") from exc  # fmt: skip
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another `hpstudy run` is using {run_dir}; wait for it to end, "
                "or give this one its own --out folder"
            ) from None
        yield


def write_run_info(run_dir: Path, study: Study, options: RunOptions, data: Data) -> None:
    # Imported here: writing a run needs torch, reading one (the report) does not.
    from hpstudy.engine.flops import measure_matmul_flops

    # Measured before training, when the device is as busy as training will find it; the
    # FLOP floor of `run` and `status` uses this number rather than a later measurement.
    flops = measure_matmul_flops(options.device, data.dtype, tf32=data.tf32)
    info = run_info(study, options, data.split, argv=sys.argv, matmul_flops=flops)
    # The data as loaded: its shape and classes, and the [data] spec with its path resolved, so
    # the report rebuilds the same configurations from any working folder.
    info["data"] = data.describe() | {"spec": study.data}
    with atomic_file(run_dir / RUN_FILE, "w") as f:
        json.dump(info, f, indent=1)


def run_info(
    study: Study, options: RunOptions, split: dict, *, argv: list[str], matmul_flops: float
) -> dict:
    """What run.json holds. The storage URL loses its password (`redact_url`) in `storage`,
    `options` and `command`: run folders are shared with reports, passwords are not."""
    import torch

    storage = redact_url(options.storage) if options.storage else options.storage
    return {
        "schema_version": 1,
        "study": study.name,
        "study_file": str(study.path),
        "study_toml": study.path.read_text(encoding="utf-8"),
        "protocol": study.protocol.value,
        "storage": storage,
        "overrides": {
            "n_seeds": study.n_seeds,
            "max_epochs": study.max_epochs,
            "with_clean": study.with_clean,
            "time_budget_s": study.time_budget_s,
        },
        "options": asdict(options) | {"storage": storage},
        "split": split,
        "device": options.device,
        "matmul_flops": matmul_flops,
        "command": redact_args(argv, options.storage),
        "versions": {"hpstudy": __version__, "torch": torch.__version__},
        "machine": machine_info(options.device),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def git_commit(folder: Path) -> str:
    """The checkout's HEAD commit, marked when tracked files differ from it (the code that ran
    is then not that commit's); "" outside a git checkout."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=folder,
                              timeout=10).stdout.strip()  # fmt: skip

    try:
        commit = git("rev-parse", "HEAD")
        if commit and git("status", "--porcelain", "--untracked-files=no"):
            commit += " with uncommitted changes"
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return commit


def machine_info(device: str) -> dict:
    """What the report's "reproduce and cost" block names: commit, packages, device, threads."""
    import platform
    from importlib import metadata

    import torch

    commit = git_commit(Path(__file__).parent)
    packages = {"python": platform.python_version()}
    for name in ("torch", "numpy", "optuna", "scipy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = _cpu_model() or platform.processor() or platform.machine()
    # The CPU's vector extensions decide which float32 kernels ran (what a rerun matches).
    return {"git_commit": commit, "packages": packages, "device_name": name,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}  # fmt: skip


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def record_elapsed(run_dir: Path, elapsed_s: float) -> None:
    """Add this invocation's end-to-end time to run.json (the report's cost block reads it)."""
    update_run_info(run_dir, elapsed_s=elapsed_s,
                    finished=datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip


def update_run_info(run_dir: Path, **changes: Any) -> None:
    """Rewrite run.json with `changes` (atomically)."""
    info = read_run_info(run_dir) | changes
    with atomic_file(run_dir / RUN_FILE, "w") as f:
        json.dump(info, f, indent=1)


def load_study_from_info(info: dict, run_dir: str | Path) -> Study:
    """The study a run used, with the overrides it ran with (from the copy in run.json)."""
    return study_as_filed(info, run_dir).with_overrides(**info["overrides"])


def study_as_filed(info: dict, run_dir: str | Path) -> Study:
    """The study as its file says, before the run's overrides (`--seeds`, `--max-epochs`, ...),
    on the data the run loaded (from the copy in run.json)."""
    if "study_toml" not in info or "overrides" not in info:
        raise UserError(f"{Path(run_dir) / RUN_FILE} lacks the study it ran ('study_toml', "
                        "'overrides'); rerun `hpstudy run` with the same study and --out to "
                        "rewrite it (finished trials in the store are kept)")  # fmt: skip
    study = parse_study(info["study_toml"], info.get("study_file") or Path(run_dir) / RUN_FILE)
    described = info.get("data")
    if isinstance(described, dict) and isinstance(described.get("spec"), dict):
        shape, names = described.get("input_shape") or [], described.get("class_names") or []
        study = dataclasses.replace(study, data=described["spec"])
        study = study.with_data_shape(math.prod(shape), len(names))
    return study


def read_run_info(run_dir: str | Path) -> dict:
    """The run folder's `run.json`: study name, storage URL, device, options."""
    path = Path(run_dir) / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        # `hpstudy run` made the folder (its lock, its store), then stopped before its probe
        if any((Path(run_dir) / name).exists() for name in (LOCK_FILE, "study.db")):
            raise UserError(f"{run_dir} holds a run stopped before it began (no {RUN_FILE} yet); "
                            "rerun the `hpstudy run` command that made it") from None  # fmt: skip
        raise UserError(
            f"{run_dir} is not an hpstudy run folder (no {RUN_FILE}); give the "
            "folder `hpstudy run` wrote, such as runs/paper"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; {_REWRITE_RUN_FILE}") from exc
    _check_run_info(info, path)
    if info.get("schema_version", 0) > RUN_SCHEMA_VERSION:
        raise UserError(f"{path} was written by a newer hpstudy; upgrade hpstudy to read it")
    return info


_REWRITE_RUN_FILE = ("rerun `hpstudy run` with the same study and --out to rewrite it (finished "
                     "trials in the store are kept)")  # fmt: skip
_RUN_INFO_SHAPE = {"study": str, "study_toml": str, "split": dict, "overrides": dict,
                   "options": dict, "phases_s": dict}  # fmt: skip


def _check_run_info(info: Any, path: Path) -> None:
    """run.json must be the object `hpstudy run` writes, as far as readers rely on it."""
    if not isinstance(info, dict):
        problem = f"a JSON object, got {type(info).__name__}"
    else:
        # "study" is what every reader needs; the rest, where present, must have its type.
        wrong = [k for k, t in _RUN_INFO_SHAPE.items()
                 if (k == "study" or k in info) and not isinstance(info.get(k), t)]  # fmt: skip
        phases = info.get("phases_s") if not wrong else None
        if phases and not all(_is_seconds(v) for v in phases.values()):
            problem = f"'phases_s' to give seconds per phase, got {phases!r}"[:200]
        elif not wrong:
            return
        else:
            kind = _RUN_INFO_SHAPE[wrong[0]].__name__
            problem = f"{wrong[0]!r} to be a {kind}, got {info.get(wrong[0])!r}"[:200]
    raise UserError(f"{path} is damaged: expected {problem}; {_REWRITE_RUN_FILE}")


def _is_seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def open_run(run_dir: str | Path, storage: str | None = None) -> Store:
    """The Store of a run folder: `storage` (a URL) if given, else the storage URL its run.json
    recorded, else its SQLite file.

    run.json keeps the URL without its password (`redact_url`), so PostgreSQL then takes the
    password from PGPASSWORD or ~/.pgpass; a login that fails says so, and how to fix it.
    """
    info = read_run_info(run_dir)
    if storage:
        _refuse_missing_sqlite(storage, run_dir, given=True)
        return Store(storage, info["study"], reader=True)
    url = info.get("storage") or default_url(run_dir)
    _refuse_missing_sqlite(url, run_dir, given=False)
    try:
        return Store(url, info["study"], reader=True)
    except UserError as exc:
        reason = str(exc.__cause__ or exc).splitlines()[0]
        if "password" not in reason.lower():
            raise
        raise UserError(
            f"cannot log in to the storage {url!r} of {run_dir} ({reason}); run.json keeps the "
            "storage URL without its password: set PGPASSWORD or ~/.pgpass, or pass "
            "--storage URL"
        ) from exc


def _refuse_missing_sqlite(url: str, run_dir: str | Path, *, given: bool) -> None:
    """Readers never create a store: opening a SQLite file that is not there would make an
    empty one (outside the run folder, when run.json names another file)."""
    missing = missing_sqlite_file(url)
    if missing is None:
        return
    if given:
        raise UserError(f"{missing} does not exist, and reading a run creates no store; check "
                        "--storage (sqlite:////absolute/path/study.db)")  # fmt: skip
    named = "" if missing == Path(run_dir).resolve() / "study.db" else f", which {RUN_FILE} names"
    raise UserError(f"{missing} does not exist: the store of {run_dir}{named} was moved or "
                    "deleted, and reading a run creates no store; put it back, or pass --storage "
                    "naming where it is now")  # fmt: skip


def load_trials(run_dir_or_url: str | Path, study: str | None = None) -> list[TrialRecord]:
    """Every trial of a run: from a run folder, or from a storage URL plus the study name."""
    text = str(run_dir_or_url)
    if "://" in text:
        if study is None:
            raise UserError(f"give the study name to read {text!r} (a storage may hold several)")
        _refuse_missing_sqlite(text, text, given=True)
        return Store(text, study, reader=True).records()
    return open_run(run_dir_or_url).records()
