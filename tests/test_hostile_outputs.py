"""Hostile outputs (issue 26, classes 4, 5, 6 and 10): user text that would drive a terminal or
matplotlib's mathtext parser, model metadata edited by hand, read-only commands on a run whose
store is gone, a damaged store and a disk that fills while the model is saved. Each gets one
line and a non-zero exit, and leaves nothing behind that was not there."""

from __future__ import annotations

import io
import json
import resource
import signal
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hpstudy import cli
from hpstudy.commands.progress import BarPrinter, ProgressPrinter
from hpstudy.config.config import Config
from hpstudy.config.studyfile import load_study
from hpstudy.data import eda, fashion_mnist
from hpstudy.engine.model import build_model
from hpstudy.predict.modelfile import ModelFileError, load_model, save_model
from hpstudy.protocols.events import DataWarning, StageFinished, StageStarted
from hpstudy.report import figures
from hpstudy.stats.tables import Row, StageTable, mean_ci
from hpstudy.storage import Store
from hpstudy.storage.rundir import MODEL_FILE, RUN_FILE
from hpstudy.usertext import plot_text, shown
from test_hostile import _copy_run, finished_run  # noqa: F401 - a finished tiny run, copied
from tiny_studies import QUICK, hpstudy_cmd, subprocess_env, write_study

FASHION_NORMALIZATION = {"mean": fashion_mnist.PIXEL_MEAN, "std": fashion_mnist.PIXEL_STD}
TINY = ["--max-epochs", "1", "--limit-train", "1000", "--limit-eval", "500", "--no-report"]
# What a terminal acts on: escape sequences (clear screen, set the title, colour), a bell, a
# carriage return that overwrites the line, a right-to-left override that reorders it.
RAW = ("\x1b", "\x07", "\r", "\u202e")
# A formula matplotlib's mathtext cannot parse: drawn as mathtext, it raises at draw time.
BAD_MATH = r"$\frac{1}{$"


def _predict_refuses(model: Path, fashion, tmp_path: Path, capsys) -> str:
    """`hpstudy predict` with `model` on a real test image: exit 2; its one error line."""
    image = tmp_path / "a.png"
    Image.fromarray(fashion.test_images[0]).save(image)
    assert cli.main(["predict", "--model", str(model), str(image)]) == 2
    return _err_line(capsys)


def _err_line(capsys) -> str:
    """The command's stderr: exactly one line, no traceback, nothing raw."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpstudy "), err
    return lines[0]


def _assert_inert(text: str) -> None:
    for ch in RAW:
        assert ch not in text, f"{ch!r} printed raw in {text!r}"


# -- 4. user text reaches a terminal or a parser raw ----------------------------------------


def test_one_function_escapes_what_a_terminal_would_act_on():
    name = "shoe\x1b]0;owned\x07\x1b[2J\r\u202egnp.png" + b"\xff".decode("utf-8", "surrogateescape")
    text = shown(name)
    _assert_inert(text)
    assert text == r"shoe\x1b]0;owned\x07\x1b[2J\r\u202egnp.png\xff"
    text.encode("utf-8")  # no lone surrogate left: printing it cannot raise
    assert shown("Ankle boot ★ ünï 中") == "Ankle boot ★ ünï 中"  # printable text unchanged
    assert plot_text(BAD_MATH) == r"\$\frac{1}{\$"


def _model_with_class_names(path: Path, names: list[str]) -> Path:
    """An untrained MLP (seeded) saved with these class names."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_model(Config(topology="T1"))
    return save_model(path, state_dict=net.state_dict(), config=Config(topology="T1"),
                      normalization=FASHION_NORMALIZATION,
                      metrics={}, data_digests={}, class_names=names)  # fmt: skip


HOSTILE_CLASSES = [f"\x1b[31mclass{i}\x1b[0m\r" if i % 2 else f"\u202eclass{i}" for i in range(10)]


def test_predict_prints_file_and_class_names_escaped(fashion, tmp_path, capsys):
    model = _model_with_class_names(tmp_path / "m.pth", HOSTILE_CLASSES)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(fashion.test_images[i]).save(photos / f"\x1b[2J{i}\r.png")
    (photos / "\x1b]0;pwned\x07broken.png").write_bytes(b"not a png")
    code = cli.main(["predict", "--model", str(model), str(photos)])
    out, err = capsys.readouterr()
    assert code == 1  # the broken image
    _assert_inert(out)
    _assert_inert(err)
    assert r"\x1b[2J0\r.png" in out
    assert r"\x1b[31mclass" in out or r"\u202eclass" in out
    assert r"\x1b]0;pwned\x07broken.png" in err and "Traceback" not in err

    code = cli.main(["predict", "--model", str(model), str(photos), "--json"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["class"] for r in records} <= set(HOSTILE_CLASSES)  # --json keeps the exact text


def test_an_error_line_naming_a_hostile_path_is_escaped(tmp_path, capsys):
    missing = tmp_path / "\x1b[2Jmodel\r.pth"
    assert cli.main(["predict", "--model", str(missing), str(tmp_path)]) == 2
    line = _err_line(capsys)
    _assert_inert(line)
    assert r"\x1b[2Jmodel\r.pth" in line


@pytest.mark.slow  # 1.3 to 2.2 s here: the fast tier stays under a minute
def test_figures_draw_dollar_names_as_plain_text(fashion, tmp_path):
    names = [BAD_MATH, "$x^$", "a$b", *fashion_mnist.CLASS_NAMES[3:]]
    labels, images = fashion.test_labels[:200], fashion.test_images[:200]
    predictions = (labels + 1) % 10  # every image misclassified: every name is drawn
    cm = np.bincount(labels * 10 + predictions, minlength=100).reshape(10, 10)
    written = [
        figures.plot_confusion_matrix(cm, names, tmp_path / "cm.png"),
        figures.plot_misclassified(images, labels, predictions, names, tmp_path / "wrong.png"),
    ]
    counts = np.bincount(labels, minlength=10)
    written.append(eda.plot_class_distribution(counts, counts, tmp_path / "dist.png",
                                               class_names=names, title=BAD_MATH))  # fmt: skip
    written.append(eda.plot_samples(images, labels, tmp_path / "samples.png", class_names=names,
                                    n_per_class=2))  # fmt: skip
    for path in written:
        assert path.stat().st_size > 1000


def test_eda_of_a_data_file_with_hostile_names(fashion, tmp_path, capsys):
    """The data file's name becomes the figure's title, its class names the axis labels (a
    class name must be printable, so only the file name holds an escape sequence)."""
    folder = tmp_path / "d"
    folder.mkdir()
    path = folder / "shapes$_{$\x1b[2J.npz"
    classes = np.array([BAD_MATH, "$x^$", "a$b"])
    keep = fashion.train_labels[:600] < 3
    keep_test = fashion.test_labels[:300] < 3
    np.savez(path, x_train=fashion.train_images[:600][keep],
             y_train=fashion.train_labels[:600][keep], x_test=fashion.test_images[:300][keep_test],
             y_test=fashion.test_labels[:300][keep_test], classes=classes)  # fmt: skip
    code = cli.main(["eda", "--data", str(path), "--out", str(tmp_path / "eda")])
    out, err = capsys.readouterr()
    assert code == 0, err
    _assert_inert(out + err)
    assert r"shapes$_{$\x1b[2J.npz" in out and BAD_MATH in out
    assert len(list((tmp_path / "eda").glob("*.png"))) == 2


# A stage title, a run folder and a data file name as a study file and --out may give them.
HOSTILE = "\x1b[2J\r\u202e"


def _digits_npz(path: Path, n_copies: int) -> Path:
    """scikit-learn's digits as a user's .npz (8 x 8 images, 0..16) whose test split starts
    with `n_copies` training images, so the run warns about them, naming the file."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.images.astype(np.uint8), bunch.target.astype(np.int64)
    np.savez(path, x_train=x[:1200], y_train=y[:1200],
             x_test=np.concatenate([x[:n_copies], x[1200:]]),
             y_test=np.concatenate([y[:n_copies], y[1200:]]))  # fmt: skip
    return path


@pytest.mark.parametrize("printer", [ProgressPrinter, BarPrinter])
def test_progress_escapes_stage_titles_labels_and_data_warnings(printer, tmp_path, capsys):
    """What `run` and `worker` print as a study goes: a data warning that names the user's
    file, a stage's line and bar, and its table, whose title and labels come from the study
    file; escaped before the table measures its columns, so they still line up."""
    stream = io.StringIO()
    progress = printer(stream=stream)
    progress(DataWarning(f"3 of 9 test examples in data{HOSTILE}.npz are copies"))
    progress(StageStarted(1, 1, f"width{HOSTILE}", n_configs=2, n_reused=0))
    rows = tuple(Row(label=label, config=Config(topology="T1"), seeds=(0,),
                     selection=mean_ci([accuracy]), best_epochs=(1,), outcomes=("complete",))
                 for label, accuracy in ((f"T1{HOSTILE}", 0.8), ("T2", 0.7)))  # fmt: skip
    table = StageTable(study="s", protocol="staged", index=1, name="width",
                       title=f"Width{HOSTILE}", factor="topology", selection="test",
                       rule=f"winner by the title {HOSTILE}", rows=rows)  # fmt: skip
    progress(StageFinished(table))
    printed, said = capsys.readouterr().out, stream.getvalue()
    _assert_inert(printed)
    _assert_inert(said.replace("\rstage 1/1", "stage 1/1"))  # tqdm's \r redraws the bar
    escaped = r"\x1b[2J\r\u202e"
    assert f"data{escaped}.npz are copies" in said and f"width{escaped}: 2 trials" in said
    lines = printed.rstrip("\n").splitlines()
    assert lines[0] == f"Width{escaped}" and lines[-1] == f"  (winner by the title {escaped})"
    header, first, second = lines[1:4]
    assert first.split()[:2] == [f"T1{escaped}", "80.00"]
    assert header.index("test acc") == first.index("80.00") == second.index("70.00")


@pytest.mark.slow  # a whole study, 4 to 6 s here
def test_run_prints_a_hostile_title_folder_and_data_file_escaped(tmp_path, capsys):
    """The table's title (study file), the run folder (--out) and the data file named in a data
    warning reach the terminal escaped: as the progress lines, the tables and the paths."""
    _digits_npz(tmp_path / f"digits{HOSTILE}.npz", n_copies=10)
    data_table = f"[data]\npath = {json.dumps(f'digits{HOSTILE}.npz')}\n"
    study = write_study(tmp_path, name="hostile", max_epochs=1, extra=data_table)
    text = study.read_text().replace(
        'factor = "topology"', f'factor = "topology"\ntitle = {json.dumps(f"Width{HOSTILE}")}'
    )
    study.write_text(text)
    out = tmp_path / f"run{HOSTILE}"
    assert cli.main(["run", str(study), "--out", str(out), *QUICK, "--device", "cpu"]) == 0
    printed, err = capsys.readouterr()
    _assert_inert(printed + err)
    escaped = r"\x1b[2J\r\u202e"
    assert f"Width{escaped}\n" in printed  # the table's first line, its title
    assert f"run folder: {tmp_path}/run{escaped}  (tables in" in printed
    assert f"final model: {tmp_path}/run{escaped}/final_best_model.pth" in printed
    assert f"report: {tmp_path}/run{escaped}/report.html" in printed
    assert f"digits{escaped}.npz are byte-for-byte copies" in err  # the data warning

    # run.json is a file anyone may edit; status prints its phase names escaped too.
    info = json.loads((out / RUN_FILE).read_text())
    info["phases_s"] = {f"data{HOSTILE}": 1.0, **(info.get("phases_s") or {})}
    (out / RUN_FILE).write_text(json.dumps(info))
    assert cli.main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    _assert_inert(printed)
    assert f"phases of the last run (s): data{escaped} 1.0" in printed


def test_status_of_a_shared_storage_escapes_study_and_worker_names(tmp_path, capsys):
    """With --storage and no run folder, status prints the study's name as given and the
    workers' names as the storage holds them: any process sharing it wrote those."""
    name = f"grid{HOSTILE}"
    url = f"journal://{tmp_path / 'shared.log'}"
    store = Store(url, name)
    store.create_or_load()
    store.worker = f"host{HOSTILE}:1"  # a host name as another machine set it
    store.create_running(Config(topology="T1"), protocol="grid",
                         split={"selection": "test", "n_train": 600},
                         space=load_study("paper").space)  # fmt: skip
    assert cli.main(["status", name, "--storage", url]) == 0
    printed = capsys.readouterr().out
    _assert_inert(printed)
    assert r"study grid\x1b[2J\r\u202e (?) in journal://" in printed
    assert r"running on host\x1b[2J\r\u202e:1: 1 trials" in printed


def test_a_data_folder_with_a_hostile_name_is_printed_escaped(tmp_path, capsys):
    folder = tmp_path / f"fm{HOSTILE}"
    folder.mkdir()
    for name in fashion_mnist.FILES.values():  # the real files, linked into the hostile folder
        (folder / f"{name}.gz").symlink_to(fashion_mnist.DEBIAN_DIR / f"{name}.gz")
    assert cli.main(["data", "verify", "--data-dir", str(folder)]) == 0
    printed, err = capsys.readouterr()
    _assert_inert(printed + err)
    assert rf"FashionMNIST verified in {tmp_path}/fm\x1b[2J\r\u202e (" in printed


def test_words_argparse_does_not_know_are_echoed_escaped(tmp_path, capsys):
    """`hpstudy status runs/*` with a hostile folder name among the words: argparse's usage
    error echoes them."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["status", str(tmp_path), f"runs/x{HOSTILE}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    _assert_inert(err)
    assert r"unrecognized arguments: runs/x\x1b[2J\r\u202e" in err


# -- 5. model metadata validated at load ----------------------------------------------------


def _edited(source: Path, target: Path, **metadata) -> Path:
    payload = torch.load(source, weights_only=True)
    payload["metadata"].update(metadata)
    torch.save(payload, target)
    return target


@pytest.mark.parametrize("value", ["x", -5, 1e308, True, 0.5, 256, [255]])
def test_pixel_max_that_is_not_a_pixel_value_is_refused(value, fashion, tmp_path, capsys):
    good = _model_with_class_names(tmp_path / "m.pth", list(fashion_mnist.CLASS_NAMES))
    bad = _edited(good, tmp_path / "bad.pth", pixel_max=value)
    with pytest.raises(ModelFileError, match=r"'pixel_max' must be an integer in 1\.\.255"):
        load_model(bad)
    line = _predict_refuses(bad, fashion, tmp_path, capsys)
    assert str(bad) in line and "pixel_max" in line and repr(value) in line


@pytest.mark.parametrize("value", [255, 16, None])
def test_pixel_max_as_hpstudy_writes_it_loads(value, tmp_path):
    good = _model_with_class_names(tmp_path / "m.pth", list(fashion_mnist.CLASS_NAMES))
    assert load_model(_edited(good, tmp_path / "ok.pth", pixel_max=value)).config.n_inputs == 784


def _cnn_file(tmp_path: Path) -> Path:
    config = Config(conv=(4,), topology=(16,))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_model(config)
    return save_model(tmp_path / "cnn.pth", state_dict=net.state_dict(), config=config,
                      normalization=FASHION_NORMALIZATION,
                      metrics={}, data_digests={},
                      extra={"input_shape": [28, 28], "pixel_max": 255})  # fmt: skip


@pytest.mark.parametrize("shape", [[14, 56], [56, 14], [784]])
def test_a_cnn_file_whose_input_shape_is_not_its_square_is_refused(shape, fashion, tmp_path,
                                                                   capsys):  # fmt: skip
    good = _cnn_file(tmp_path)
    assert load_model(good).input_shape == (28, 28)
    bad = _edited(good, tmp_path / "bad.pth", input_shape=shape)
    with pytest.raises(ModelFileError, match="28 x 28 images"):
        load_model(bad)
    line = _predict_refuses(bad, fashion, tmp_path, capsys)
    assert str(bad) in line and "input_shape" in line and str(shape) in line


# What every refusal of edited metadata tells the user to do.
FIX = "the metadata was edited or damaged: use the file as `hpstudy run` saved it"


BAD_SHAPES = ["28x28", None, [], [28], [28, 28, 1], [0, 784], [-28, -28], [True, 784],
              [28, 28.0], [2**64, 2**64], [10**600]]  # fmt: skip


@pytest.mark.parametrize("shape", BAD_SHAPES, ids=[f"{s!r:.16}" for s in BAD_SHAPES])
def test_input_shape_that_is_not_the_models_is_refused(shape, fashion, tmp_path, capsys):
    """Not a list of one or two positive ints holding the model's 784 inputs, or absurdly large
    (the product bounds it): one line naming the file, the key, the value and the fix."""
    good = _model_with_class_names(tmp_path / "m.pth", list(fashion_mnist.CLASS_NAMES))
    bad = _edited(good, tmp_path / "bad.pth", input_shape=shape)
    with pytest.raises(ModelFileError, match=r"'input_shape' must be \[H, W\] or \[D\] with 784"):
        load_model(bad)
    line = _predict_refuses(bad, fashion, tmp_path, capsys)
    assert str(bad) in line and "input_shape" in line and line.endswith(FIX), line
    assert repr(shape)[:150] in line and len(line) < 600


OUTSIZE = {
    "huge-int-mean": {"normalization": {"mean": 10**400, "std": 0.35}},  # float(): OverflowError
    "megabyte-mean": {"normalization": {"mean": "x" * 10**6, "std": 0.35}},  # echoed whole
    "huge-int-lr": {"config": Config(topology="T1").to_dict() | {"lr": 10**400}},
}


@pytest.mark.parametrize("metadata", OUTSIZE.values(), ids=OUTSIZE)
def test_metadata_beyond_floats_or_a_line_is_one_short_line(metadata, fashion, tmp_path,
                                                            capsys):  # fmt: skip
    good = _model_with_class_names(tmp_path / "m.pth", list(fashion_mnist.CLASS_NAMES))
    bad = _edited(good, tmp_path / "bad.pth", **metadata)
    (key,) = metadata
    with pytest.raises(ModelFileError, match=key):
        load_model(bad)
    line = _predict_refuses(bad, fashion, tmp_path, capsys)
    assert str(bad) in line and key in line and line.endswith(FIX) and len(line) < 600, line


# What the report prints from a model file besides what predict computes from.
BAD_MAPS = {
    "metrics-text": {"metrics": "0.9"},
    "metrics-nan": {"metrics": {"test_accuracy": float("nan")}},
    "metrics-bool": {"metrics": {"best_epoch": True}},
    "metrics-string": {"metrics": {"test_accuracy": "\x1b[2J0.9"}},
    "digests-list": {"data_digests": ["abc"]},
    "digests-number": {"data_digests": {"train-images-idx3-ubyte.gz": 5}},
    "versions-none": {"versions": None},
    "versions-int-key": {"versions": {1: "2.13"}},
}


@pytest.mark.parametrize("metadata", BAD_MAPS.values(), ids=BAD_MAPS)
def test_metadata_the_report_prints_is_checked_on_loading(metadata, tmp_path):
    """The model card formats metrics as numbers and provenance joins versions: a value that
    would crash or garble them is refused on loading, one line naming the key and the fix."""
    good = _model_with_class_names(tmp_path / "m.pth", list(fashion_mnist.CLASS_NAMES))
    assert load_model(good).metadata["versions"]["python"]  # what save_model writes loads
    bad = _edited(good, tmp_path / "bad.pth", **metadata)
    (key,) = metadata
    with pytest.raises(ModelFileError, match=f"'{key}' must map names to") as caught:
        load_model(bad)
    line = str(caught.value)
    assert str(bad) in line and line.endswith(FIX) and "\n" not in line and "\x1b" not in line


def _save_with(tmp_path: Path, config: Config, **extra) -> Path:
    """save_model of a seeded untrained `config` with `extra` metadata."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_model(config)
    return save_model(tmp_path / "m.pth", state_dict=net.state_dict(), config=config,
                      normalization=FASHION_NORMALIZATION,
                      metrics={}, data_digests={}, extra=extra)  # fmt: skip


UNSAVABLE = [("pixel_max", v) for v in (0, 256, True, 16.0, "255", 10**600)] + [
    ("input_shape", v) for v in ([5, 5], [28, 28, 1], "28x28", [True, 784], [2**64, 2**64], [])
]


@pytest.mark.parametrize(("key", "value"), UNSAVABLE, ids=[f"{k}={v!r:.12}" for k, v in UNSAVABLE])
def test_save_model_refuses_what_load_model_would_refuse(key, value, tmp_path):
    with pytest.raises(ValueError, match=f"save_model extra: metadata '{key}' must be"):
        _save_with(tmp_path, Config(topology="T1"), **{key: value})
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


def test_save_model_refuses_a_cnn_shape_that_is_not_its_square(tmp_path):
    with pytest.raises(ValueError, match="first convolution takes 28 x 28 images"):
        _save_with(tmp_path, Config(conv=(4,), topology=(16,)), input_shape=[784])
    assert list(tmp_path.iterdir()) == []


def test_save_model_writes_a_shape_tuple_as_the_list_load_model_reads(tmp_path):
    path = _save_with(tmp_path, Config(topology="T1"), input_shape=(28, 28), pixel_max=16)
    loaded = load_model(path)
    assert loaded.metadata["input_shape"] == [28, 28] and loaded.pixel_max == 16


# -- 6. read-only commands never create a store ---------------------------------------------


def _set_storage(run_dir: Path, url: str | None) -> None:
    info = json.loads((run_dir / RUN_FILE).read_text())
    info["storage"] = url
    (run_dir / RUN_FILE).write_text(json.dumps(info))


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_store_named_in_run_json_that_is_gone_is_not_created(
    command,
    finished_run,  # noqa: F811 - the imported fixture
    tmp_path,
    capsys,
):
    run_dir = _copy_run(finished_run, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    gone = elsewhere / "gone.db"
    _set_storage(run_dir, f"sqlite:///{gone}")
    assert cli.main([command, str(run_dir)]) == 2
    line = _err_line(capsys)
    assert str(gone) in line and "does not exist" in line and "--storage" in line
    assert not gone.exists() and list(elsewhere.iterdir()) == []

    (run_dir / "study.db").unlink()  # the default store, deleted
    _set_storage(run_dir, None)
    assert cli.main([command, str(run_dir)]) == 2
    assert str(run_dir / "study.db") in _err_line(capsys)
    assert not (run_dir / "study.db").exists()
    assert cli.main([command, str(run_dir), "--storage", f"sqlite:///{gone}"]) == 2
    assert str(gone) in _err_line(capsys) and not gone.exists()


# -- 10. a damaged store, a full disk -------------------------------------------------------


def _damage_trials_page(db: Path) -> None:
    """Overwrite the second half of the `trials` table's root page: the header (page 1) and the
    schema stay valid, so SQLite opens the file and fails only when it reads the trials."""
    with sqlite3.connect(db) as conn:
        query = "SELECT rootpage FROM sqlite_master WHERE name = 'trials'"
        (root,) = conn.execute(query).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    raw = bytearray(db.read_bytes())
    start = (root - 1) * page_size
    raw[start + page_size // 2 : start + page_size] = b"\xa5" * (page_size // 2)
    db.write_bytes(bytes(raw))


def test_a_damaged_page_inside_a_valid_header_is_one_line(finished_run, tmp_path, capsys):  # noqa: F811
    run_dir = _copy_run(finished_run, tmp_path)
    db = run_dir / "study.db"
    _damage_trials_page(db)
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"
    study = write_study(tmp_path, max_epochs=1)
    for command in (["status", str(run_dir)], ["report", str(run_dir)],
                    ["run", str(study), "--out", str(run_dir), *TINY]):  # fmt: skip
        assert cli.main(command) != 0
        line = _err_line(capsys)
        assert str(db) in line and "damaged" in line and "move it aside" in line, line


def _file_size_limit(n_bytes: int):
    """For the child process: a file may grow to `n_bytes`, and writing past that fails with
    EFBIG (SIGXFSZ ignored), as writing on a full disk fails with ENOSPC."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, resource.RLIM_INFINITY))

    return limit


@pytest.mark.slow
def test_a_disk_that_fills_while_the_model_is_saved_is_one_line_and_a_rerun_saves_it(
    finished_run,  # noqa: F811 - the imported fixture
    tmp_path,
    capsys,
):
    run_dir = _copy_run(finished_run, tmp_path)
    model = run_dir / MODEL_FILE
    size = model.stat().st_size
    model.unlink()
    db_size = (run_dir / "study.db").stat().st_size
    assert db_size * 2 < size  # the limit below stops the model, not the store
    study = write_study(tmp_path, max_epochs=1)
    args = ["run", str(study), "--out", str(run_dir), *TINY]
    proc = subprocess.run(hpstudy_cmd(*args), env=subprocess_env(), text=True,
                          capture_output=True, preexec_fn=_file_size_limit(size // 2),
                          timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("hpstudy run: error: ") and str(model) in line, line
    assert "File too large" in line and "rerun the same command" in line
    assert not model.exists() and not list(run_dir.glob(".*.part"))
    # The trials are kept: the rerun trains nothing and saves the model.
    assert cli.main(args) == 0
    assert "trained 0 trials now" in capsys.readouterr().out
    assert load_model(model).config.n_inputs == 784
