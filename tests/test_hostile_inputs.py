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
from hpstudy.config.config import Config
from hpstudy.errors import DataError, UserError
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


# --- class 1: the data's real shape is the model's shape -----------------------------------------


def test_conv_on_images_that_are_not_square_is_one_line(tmp_path, capsys):
    x, y = _digits()
    data = _npz(tmp_path / "tall.npz", x.reshape(len(x), 16, 4), y)  # 64 pixels, not 8x8
    study = _study(tmp_path, data, "topology = [[8]]\nconv = [[4]]")
    err = _refused(capsys, tmp_path, str(study))
    assert "study.toml: space.conv[0]: conv needs square images" in err and "16x4" in err


def test_augment_of_flat_features_is_one_line(tmp_path, capsys):
    x, y = _digits()
    features = x.reshape(len(x), 64).astype(np.float32)  # 64 values: a square count, not images
    data = _npz(tmp_path / "flat.npz", features, y)
    study = _study(tmp_path, data, 'topology = [[8]]\naugment = ["flip"]')
    err = _refused(capsys, tmp_path, str(study))
    assert "space.augment[0]" in err and "64 features" in err


def test_the_shape_travels_in_config_and_leaves_mlp_keys_alone():
    from hpstudy.config.config import Config

    with pytest.raises(UserError, match="16x4 images"):
        Config(n_inputs=64, input_shape=(16, 4), conv=(4,), topology=(8,))
    with pytest.raises(UserError, match="64 features"):
        Config(n_inputs=64, input_shape=(64,), augment="shift", topology=(8,))
    with pytest.raises(UserError, match="holds 60 values"):
        Config(n_inputs=64, input_shape=(6, 10), topology=(8,))
    cnn = Config(n_inputs=64, input_shape=[8, 8], conv=(4,), topology=(8,))
    assert cnn.input_shape is None and cnn.image_side == 8  # the implied shape: keys as before
    mlp = Config(n_inputs=64, input_shape=(16, 4), topology=(8,))
    assert mlp.to_dict() == Config(n_inputs=64, topology=(8,)).to_dict()
    assert mlp.example_shape == (16, 4) and not mlp.is_square_image


# --- class 2: checks that need the data run before the run folder exists -------------------------


def test_a_cnn_too_deep_for_the_data_leaves_no_run_folder(tmp_path, capsys):
    x, y = _digits()
    data = _npz(tmp_path / "small.npz", x, y)  # 8x8: three 2x2 poolings reach 1x1, four cannot
    study = _study(tmp_path, data, "topology = [[8]]\nconv = [[2, 2], [2, 2, 2, 2]]")
    err = _refused(capsys, tmp_path, str(study))
    assert f"{study}: space.conv[1]: 4 convolution blocks halve a 8x8 image" in err


# --- class 3: every size bounded before it is allocated ------------------------------------------


def test_a_cnn_dense_layer_is_held_to_the_layer_size_rule():
    from hpstudy.config.config import Config

    # 4096 channels of 14x14 after one pooling: a dense layer of 802,816 x 4096 weights (13 GB).
    with pytest.raises(UserError, match=r"layer 802816x4096 has 3,288,334,336 weights"):
        Config(conv=(4096,), topology=(4096,))
    with pytest.raises(UserError, match=r"convolution 20000->20000 channels"):
        Config(conv=(20000, 20000), topology=(8,))


def test_threads_are_bounded_by_the_cores(tmp_path, capsys):
    from hpstudy.runner.options import RunOptions

    with pytest.raises(UserError, match=r"--threads must be at most the \d+ cores"):
        RunOptions(threads=100_000)
    assert RunOptions(threads=os.cpu_count() or 1).threads == (os.cpu_count() or 1)
    code, _, err = _run(capsys, "run", "paper", "--threads", "100000", "--out", str(tmp_path / "r"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--threads" in err, err
    assert not (tmp_path / "r").exists()


def test_a_huge_label_in_a_tiny_npz_is_refused_before_naming_classes(tmp_path):
    from hpstudy.data import userdata

    x, y = _digits()
    y[3] = 2**40
    path = _npz(tmp_path / "big-label.npz", x, y)
    assert path.stat().st_size < 10_000
    with pytest.raises(DataError, match=r"y_train holds label 1099511627776, but every class"):
        userdata.load(path)
    x, y = _digits()
    many = np.array([f"c{i}" for i in range(1000)])  # more names than training examples
    with pytest.raises(DataError, match=r"classes names 1,000 classes but y_train has 60"):
        userdata.load(_npz(tmp_path / "names.npz", x, y, classes=many))


def _header_only_npz(path: Path, x_shape: tuple, descr: str = "|u1") -> Path:
    """An .npz whose x_train declares `x_shape` in its header and holds no data."""
    import io
    import zipfile

    x, y = _digits()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": x_shape}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue())
        for key, array in (("y_train", y[:60]), ("x_test", x[60:]), ("y_test", y[60:])):
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    return path


def test_the_array_cap_counts_the_float64_copy_for_statistics(tmp_path):
    from hpstudy.data import userdata

    # 640 MiB of uint8 pixels: under the 4 GiB cap as bytes, 5 GiB as the float64 copy.
    path = _header_only_npz(tmp_path / "wide.npz", (2**20, 640))
    with pytest.raises(DataError, match=r"x_train declares shape \(1048576, 640\) of uint8 "
                       r"\(671,088,640 bytes, 5,368,709,120 as float64\)"):  # fmt: skip
        userdata.load(path)


def test_the_trial_plan_counts_confirmation_trials(tmp_path):
    import dataclasses

    from hpstudy.config.studyfile import load_study
    from hpstudy.runner.execute import check_plan, planned_trials
    from hpstudy.runner.options import RunOptions

    study = dataclasses.replace(load_study("search"), confirm_seeds=1_000_000)
    assert planned_trials(study) >= study.confirm_top * 1_000_000
    with pytest.raises(UserError, match=r"confirm_top or confirm_seeds"):
        check_plan(study, RunOptions())
    check_plan(study, RunOptions(yes=True))


# --- class 7: paths -------------------------------------------------------------------------------


def test_a_home_of_no_user_is_one_line_in_run_and_eda(tmp_path, capsys):
    study = _study(tmp_path, "~nosuchuser/x.npz", "topology = [[8]]")
    err = _refused(capsys, tmp_path, str(study))
    assert "data.path" in err and "~nosuchuser" in err
    out = tmp_path / "eda"
    code, _, err = _run(capsys, "eda", "--data", "~nosuchuser/x.npz", "--out", str(out))
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert "~nosuchuser" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((-5, 8, 8), r"x_train declares shape \(-5, 8, 8\), with a negative size"),
     ((60, 0), r"x_train declares shape \(60, 0\): examples of no values")],
)  # fmt: skip
def test_a_bad_npy_header_names_the_array(shape, expected, tmp_path):
    import warnings

    from hpstudy.data import userdata

    path = _header_only_npz(tmp_path / "bad.npz", shape, "<f4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning before the error
        with pytest.raises(DataError, match=expected):
            userdata.load(path)


# --- class 8: one row per trained configuration ---------------------------------------------------


STAGED = """name = "hostile"
protocol = "staged"
selection = "test"
max_epochs = 1
[data]
path = "{data}"
[space]
topology = [[8]]
optimizer = {optimizers}
lr = [0.1]
activation = ["relu"]
momentum = [0.0, 0.5, 0.9]
[start]
topology = [8]
optimizer = "{start}"
momentum = 0.0
lr = 0.1
activation = "relu"
{stages}
"""


@pytest.mark.parametrize(
    ("optimizers", "start", "stages", "expected"),
    [('["adam"]', "adam", ["momentum"],
      "stages[0].values: momentum = 0 and 0.5 train one and the same model (adam ignores "
      "momentum); vary momentum only where every configuration uses sgd"),
     ('["sgd", "adam"]', "sgd", ["optimizer", "momentum"],
      "stages[1].values: momentum = 0 and 0.5 train one and the same model (adam ignores "
      "momentum, and stages[0] may choose adam)")],
)  # fmt: skip
def test_a_stage_over_a_value_without_effect_is_refused(
    optimizers, start, stages, expected, tmp_path, capsys
):
    x, y = _digits()
    data = _npz(tmp_path / "d.npz", x, y)
    text = "\n".join(f'[[stages]]\nname = "{s}"\nfactor = "{s}"' for s in stages)
    study = tmp_path / "staged.toml"
    study.write_text(STAGED.format(data=data, optimizers=optimizers, start=start, stages=text))
    err = _refused(capsys, tmp_path, str(study))
    assert expected in err


# --- class 9: the terminal and the shell ----------------------------------------------------------


@pytest.mark.slow  # 1.3 to 2.2 s here: the fast tier stays under a minute
def test_a_reader_that_goes_away_ends_quietly_with_the_shell_code(tmp_path):
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte: every write meets EPIPE
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "hpstudy.cli", "eda", "--data", "digits", "--out",
         str(tmp_path / "eda")], stdout=write, stderr=subprocess.PIPE, env=env, check=False,
    )  # fmt: skip
    os.close(write)
    assert done.returncode == 141, done.stderr.decode()  # 128 + SIGPIPE, as a shell reports it
    assert done.stderr == b""


def test_a_bare_name_is_the_shipped_study_whatever_the_folder_holds(tmp_path, monkeypatch):
    from hpstudy.config.studyfile import load_study
    from hpstudy.config.studyfinder import STUDIES_DIR

    monkeypatch.chdir(tmp_path)
    (tmp_path / "replicate").mkdir()  # a run folder named like a shipped study
    (tmp_path / "paper").write_text("not a study")
    assert load_study("replicate").path == STUDIES_DIR / "replicate.toml"
    assert load_study("paper").path == STUDIES_DIR / "paper.toml"
    shipped = sorted(p.stem for p in STUDIES_DIR.glob("*.toml"))
    assert len(shipped) >= 10
    for wrong in ("nosuch", "./replicate", "missing.toml"):
        with pytest.raises(UserError) as info:
            load_study(wrong)
        assert ", ".join(shipped) in str(info.value), str(info.value)


def test_the_download_lock_holds_where_fcntl_is_missing(tmp_path, monkeypatch):
    import sys

    from filelock import FileLock

    from hpstudy.data import download

    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` fails, as on Windows
    dest = tmp_path / "cache"
    dest.mkdir()
    lines: list[str] = []
    with FileLock(dest / ".lock"), pytest.raises(DataError) as info:
        download.fetch_all(dest, mirrors=["http://127.0.0.1:9/"], lock_wait=0.2,
                           progress=lines.append)  # fmt: skip
    assert f"another process holds the lock {dest / '.lock'}" in str(info.value)
    assert lines == [f"waiting for another process that is downloading into {dest} ..."]


def _events(n_calls: int = 1):
    from hpstudy.protocols.events import StageFinished
    from hpstudy.stats.tables import StageTable

    yield StageStarted(1, 1, "topology", 4, 0)
    for _ in range(n_calls):  # each engine call trains 4 / n_calls trials over two epochs
        for epoch in (1, 2):
            yield EpochDone("topology", 0, 1, epoch, 2, 2, 4 // n_calls, 1.0 * epoch,
                            epoch / 2, epoch / 2)  # fmt: skip
    yield StageFinished(StageTable("s", "staged", 1, "topology", "", "topology", "test", ""))


def test_progress_is_a_bar_on_a_terminal_lines_in_a_pipe_and_nothing_when_quiet(monkeypatch):
    import io

    from hpstudy.commands import progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    printer = progress.make_progress(hint=lambda: "note: busy")
    assert isinstance(printer, progress.BarPrinter)
    for event in _events(n_calls=2):
        printer(event)
    shown = terminal.getvalue()
    assert shown.count("note: busy") == 1
    assert "stage 1/1 topology: 4 trials, 0 already in the store" in shown
    assert "4/4" in shown and "2 live" in shown and "ETA" in shown and "\r" in shown
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    printer = progress.make_progress()
    assert type(printer) is progress.ProgressPrinter and printer.every_s == progress.PIPE_EVERY_S
    quiet = progress.make_progress(quiet=True)
    for event in _events():
        quiet(event)
    assert pipe.getvalue() == ""


def test_with_clean_checks_its_validation_split_before_the_run_folder(tmp_path, capsys):
    from hpstudy.config.studyfinder import STUDIES_DIR

    x, y = _digits()
    data = _npz(tmp_path / "d.npz", x, y)  # 60 training examples: no room for 6,000
    text = (STUDIES_DIR / "replicate.toml").read_text()
    study = tmp_path / "replicate-mine.toml"
    study.write_text(text.replace("[normalization]", f'[data]\npath = "{data}"\n[normalization]'))
    err = _refused(capsys, tmp_path, str(study), "--with-clean")
    assert "validation.size must be below the 60 training examples" in err


@pytest.mark.parametrize("name", ["a\x00b", "..", "x y"])
def test_a_study_name_that_is_no_slug_is_one_line(name, capsys):
    code, _, err = _run(capsys, "run", name)
    assert code == 2 and err.count("\n") == 1, err
    assert "no study named" in err and "known studies: clean, cnn" in err


@pytest.mark.parametrize("field", ["lr", "weight_decay"])
def test_an_integer_too_large_for_a_float_is_one_line(field):
    # Python and a hand-edited file can give 10**400; float() of it raises OverflowError.
    with pytest.raises(UserError, match=f"^{field} must be a finite number, got an integer too"):
        Config(topology="T1", **{field: 10**400})
