"""Issue 26, part 1: inputs, loading and the terminal, tried as a careless or hostile user would.

Each hostile input gets one line on stderr, a non-zero exit, no traceback and no run folder; none
of these tests depends on the machine's load or the clock (the load is faked where it matters).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hpstudy import cli
from hpstudy.commands.progress import ProgressPrinter, busy_machine_hint
from hpstudy.protocols.events import EpochDone, StageStarted


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _digits(n_train: int = 60, n_test: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's real 8x8 digits (values 0..16) as uint8 images and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    n = n_train + n_test
    return bunch.images[:n].astype(np.uint8), bunch.target[:n].astype(np.int64)


def _npz(path: Path, x: np.ndarray, y: np.ndarray, n_test: int = 20, **extra) -> Path:
    np.savez(path, x_train=x[:-n_test], y_train=y[:-n_test], x_test=x[-n_test:],
             y_test=y[-n_test:], **extra)  # fmt: skip
    return path


def _study(folder: Path, data: Path | str, space: str, protocol: str = "grid") -> Path:
    path = folder / "study.toml"
    path.write_text(f'name = "hostile"\nprotocol = "{protocol}"\nselection = "test"\n'
                    f'max_epochs = 1\n[data]\npath = "{data}"\n[space]\n{space}\n')  # fmt: skip
    return path


def _refused(capsys, tmp_path: Path, *argv: str) -> str:
    """`hpstudy run ARGV --out tmp/run`: non-zero, one line on stderr, no run folder."""
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", *argv, "--out", str(out), "--device", "cpu")
    assert code != 0, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("hpstudy run: error: "), err
    assert "Traceback" not in err
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    return err.strip()


@pytest.fixture
def busy_machine(monkeypatch):
    """A machine whose load fills its cores many times over, torch with 8 threads."""
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)


# --- the load note: never before an error, printed once training starts -------------------------


def test_refused_input_on_a_busy_machine_is_still_one_line(busy_machine, tmp_path, capsys):
    x, y = _digits()
    y[:5] = 99  # found once the data is loaded, where the note used to be printed already
    data = _npz(tmp_path / "d.npz", x, y)
    err = _refused(capsys, tmp_path, str(_study(tmp_path, data, "topology = [[8]]")))
    assert "d.npz" in err and "note:" not in err


def test_busy_note_comes_once_with_the_first_epoch(capsys):
    lines: list[str] = []
    printer = ProgressPrinter(every_s=0.0, hint=lambda: "note: busy")
    printer.say = lines.append
    printer(StageStarted(1, 1, "topology", 2, 0))
    assert lines == ["stage 1/1 topology: 2 trials, 0 already in the store"]
    epoch = EpochDone("topology", 0, 1, 1, 2, 2, 2, 1.0, 0.5, 0.5)
    printer(epoch)
    printer(epoch)
    assert lines[1] == "note: busy" and lines.count("note: busy") == 1 and len(lines) == 4
    assert busy_machine_hint(threads=2, cores=2, load=3.3).startswith("note: other jobs")
    assert busy_machine_hint(threads=1, cores=2, load=9.0) is None
    assert busy_machine_hint(threads=4, cores=2, load=1.0) is None
