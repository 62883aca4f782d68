"""Issue 14, your own data: a study's [data] table reaches the engine, the model file, the
report and `predict`; bad data stops before any run folder exists; FashionMNIST keys stay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpstudy import cli
from hpstudy.config.config import Config
from hpstudy.config.studyfile import load_study, parse_study
from hpstudy.config.studyfinder import STUDIES_DIR
from hpstudy.predict.modelfile import load_model
from hpstudy.stats.tables import read_tables
from hpstudy.storage import trial_key

PAPER_SPLIT = {"selection": "test", "normalization": {"mean": 0.5, "std": 0.5},
               "n_train": 60000, "n_eval": 10000, "n_test": 10000, "dtype": "float32"}  # fmt: skip


def test_fashion_mnist_trial_keys_are_unchanged():
    """The key a paper configuration had before other data existed (computed on that code)."""
    config = Config(topology="T4", optimizer="adam", lr=0.005, seed=42)
    assert "n_inputs" not in config.to_dict() and "n_classes" not in config.to_dict()
    assert trial_key(config, PAPER_SPLIT) == "6a7d52379ff266073a79"
    paper = load_study("paper")
    assert paper.config(seed=42, topology=(256, 128, 64), optimizer="adam", lr=0.005,
                        activation="relu") == config  # fmt: skip
    other = config.replace(n_inputs=64)
    assert other.layer_sizes == (64, 256, 128, 64, 10)
    assert trial_key(other, PAPER_SPLIT) != trial_key(config, PAPER_SPLIT)
    assert Config.from_dict(other.to_dict()) == other


def test_data_table_is_parsed_and_a_relative_path_resolved(tmp_path):
    text = '[data]\npath = "sub/mine.npz"\n[space]\ntopology = ["T1"]\n'
    study = parse_study(f'protocol = "grid"\nselection = "test"\n{text}', tmp_path / "s.toml")
    assert study.data == {"path": str(tmp_path.resolve() / "sub" / "mine.npz")}
    assert study.normalization == "auto" and not study.is_fashion_mnist
    plain = parse_study('protocol = "grid"\nselection = "test"\n', tmp_path / "p.toml")
    assert plain.data == {} and plain.normalization == {"mean": 0.5, "std": 0.5}
    assert plain.is_fashion_mnist
    for shipped in ("digits", "mnist"):
        assert load_study(STUDIES_DIR / f"{shipped}.toml").data["name"] == shipped


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    out = tmp / "run"
    code = cli.main(["run", "digits", "--out", str(out), "--device", "cpu", "--seeds", "1",
                     "--max-epochs", "2"])  # fmt: skip
    assert code == 0
    return tmp, out


def _digits_training_images(info: dict) -> tuple[np.ndarray, np.ndarray]:
    """(the images a digits run trains on, all its training split's images), as stored (uint8,
    0..16; the model sees them / 255 as any uint8 image)."""
    from hpstudy.data.dataset import stratified_split
    from hpstudy.data.prepare import load_study_data
    from hpstudy.runner.options import RunOptions

    ds = load_study_data(load_study("digits"), RunOptions())
    split = info["split"]
    train_idx, _ = stratified_split(ds.y_train, split["validation_size"], split["validation_seed"])
    return ds.x_train[train_idx].astype(np.float64), ds.x_train.astype(np.float64)


def test_digits_end_to_end(digits_run, capsys):
    from sklearn.datasets import load_digits

    tmp, out = digits_run
    info = json.loads((out / "run.json").read_text())
    assert info["split"]["data"] == {"name": "digits", "test_size": 0.2, "split_seed": 0}
    norm = info["split"]["normalization"]
    assert norm["from"] == "training split less validation"  # digits selects on validation
    # The 288 validation images are held out of the statistics as they are of training.
    trained_on, whole_split = _digits_training_images(info)
    assert norm["mean"] == pytest.approx(trained_on.mean() / 255, rel=1e-12)
    assert norm["std"] == pytest.approx(trained_on.std() / 255, rel=1e-12)
    # (digits images are so alike that the two means differ by 8e-7 relative: still 1e5 times
    # the tolerance above)
    assert norm["mean"] != pytest.approx(whole_split.mean() / 255, rel=1e-10)
    assert info["data"]["input_shape"] == [8, 8] and len(info["data"]["class_names"]) == 10
    (table,) = read_tables(out)
    assert len(table.rows) == 16
    loaded = load_model(out / "final_best_model.pth")
    assert loaded.config.layer_sizes[0] == 64 and loaded.input_shape == (8, 8)
    assert loaded.class_names == tuple("0123456789") and loaded.pixel_max == 16
    assert "sklearn/datasets/data/digits.csv.gz" in loaded.metadata["data_digests"]

    code, _, err = _run(capsys, "report", str(out))
    assert code == 0, err
    html = (out / "report.html").read_text()
    assert "Data: digits." in html and "64 inputs, 10 classes" in html
    for name in ("confusion_matrix.png", "class_distribution.png", "misclassified.png"):
        assert (out / "figures" / name).is_file()

    bunch = load_digits()
    image = (bunch.images[1000] * 255 / 16).round().astype(np.uint8)  # a "1", as a PNG
    Image.fromarray(image).save(tmp / "digit.png")
    Image.fromarray(image).resize((40, 40)).save(tmp / "big.png")
    code, out_text, err = _run(capsys, "predict", "--model", str(out / "final_best_model.pth"),
                               "--json", str(tmp / "digit.png"), str(tmp / "big.png"))  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out_text.splitlines()]
    assert [r["class"] for r in records][:1] == ["1"]
    assert err.strip() == (
        f"hpstudy predict: resized 1 image(s) to the model's 8 x 8 input (the first, "
        f"{tmp / 'big.png'}, was 40 x 40)"
    )
    # A dataset's images of another size are refused, not resized.
    idx = tmp / "t10k-images-idx3-ubyte"
    idx.write_bytes(b"\x00\x00\x08\x03" + (1).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
                    + bytes(784))  # fmt: skip
    code, _, err = _run(capsys, "predict", "--model", str(out / "final_best_model.pth"), str(idx))
    assert code == 1
    assert "is a 28 x 28 IDX image but the model takes 8 x 8 images; refused" in err


def _shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """12 x 12 images of three classes: a horizontal bar, a vertical bar, a square."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, size=(n, 12, 12)).astype(np.uint8)
    y = np.arange(n) % 3
    for i, label in enumerate(y):
        a, b = rng.integers(2, 7, size=2)
        if label == 0:
            x[i, a : a + 3, 1:11] = 220
        elif label == 1:
            x[i, 1:11, b : b + 3] = 220
        else:
            x[i, a : a + 5, b : b + 5] = 220
    return x, y.astype(np.int64)


@pytest.mark.slow
def test_user_npz_with_three_classes_end_to_end(tmp_path, capsys):
    x, y = _shapes(240, 0)
    xt, yt = _shapes(60, 1)
    classes = np.array(["hbar", "vbar", "square"])
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "shapes.npz", x_train=x, y_train=y, x_test=xt, y_test=yt,
             classes=classes)  # fmt: skip
    study = tmp_path / "shapes.toml"
    study.write_text(
        'name = "shapes"\nprotocol = "grid"\nselection = "test"\nmax_epochs = 3\n'
        '[data]\npath = "data/shapes.npz"\nnormalization = "auto"\n'
        '[space]\ntopology = [[16]]\noptimizer = ["adam"]\nlr = [0.01]\nactivation = ["relu"]\n'
    )
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", str(study), "--out", str(out), "--device", "cpu")
    assert code == 0, err
    info = json.loads((out / "run.json").read_text())
    assert info["split"]["data"]["file"] == "shapes.npz"
    assert len(info["split"]["data"]["sha256"]) == 64
    loaded = load_model(out / "final_best_model.pth")
    assert loaded.config.layer_sizes == (144, 16, 3)
    assert loaded.class_names == ("hbar", "vbar", "square") and loaded.input_shape == (12, 12)
    assert loaded.metadata["metrics"]["test_accuracy"] > 0.9

    code, _, err = _run(capsys, "report", str(out))
    assert code == 0, err
    assert "hbar" in (out / "report.md").read_text()

    image = np.zeros((12, 12), dtype=np.uint8)
    image[1:11, 5:8] = 255  # a vertical bar
    Image.fromarray(image).save(tmp_path / "bar.png")
    code, out_text, err = _run(capsys, "predict", "--model", str(out / "final_best_model.pth"),
                               "--json", str(tmp_path / "bar.png"))  # fmt: skip
    assert code == 0, err
    assert json.loads(out_text)["class"] == "vbar"

    code, out_text, err = _run(capsys, "eda", "--data", str(tmp_path / "data" / "shapes.npz"),
                               "--out", str(tmp_path / "eda"))  # fmt: skip
    assert code == 0, err
    assert "inputs 12 x 12, 3 classes" in out_text
    assert (tmp_path / "eda" / "eda_samples.png").is_file()


def _npz(path: Path, **changes) -> Path:
    x, y = _shapes(30, 0)
    arrays = {"x_train": x, "y_train": y, "x_test": x[:9], "y_test": y[:9]} | changes
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


BAD_DATA = {
    "missing-file": lambda d: d / "nope.npz",
    "not-an-npz": lambda d: (d / "junk.npz").write_bytes(b"hello") and d / "junk.npz",
    "missing-array": lambda d: _npz(d / "a.npz", y_test=None),
    "label-out-of-range": lambda d: _npz(
        d / "b.npz", y_test=np.full(9, 7), classes=np.array(["a", "b", "c"])
    ),
    "lengths-differ": lambda d: _npz(d / "c.npz", y_train=np.zeros(5, dtype=np.int64)),
    "nan-features": lambda d: _npz(
        d / "e.npz", x_train=np.full((30, 4), np.nan), x_test=np.zeros((9, 4))
    ),
    "string-images": lambda d: _npz(d / "f.npz", x_train=np.full((30, 2), "a")),
    "shapes-differ": lambda d: _npz(d / "g.npz", x_test=np.zeros((9, 5, 5), np.uint8)),
    "class-without-examples": lambda d: _npz(
        d / "h.npz", y_train=np.arange(30) % 2, classes=np.array(["a", "b", "c"])
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_line_and_no_run_folder(case, tmp_path, capsys):
    path = BAD_DATA[case](tmp_path)
    study = tmp_path / "bad.toml"
    study.write_text(f'protocol = "grid"\nselection = "test"\n[data]\npath = "{path.name}"\n'
                     '[space]\ntopology = ["T1"]\n')  # fmt: skip
    err = _refused(study, tmp_path, capsys)
    assert str(path) in err or path.name in err
    print(f"{case}: {err.strip()}")  # shown with -s: the report quotes these lines


@pytest.mark.parametrize(
    "table",
    ['name = "cifar"', 'name = "digits"', 'name = "mnist"\npath = "x.npz"',
     'name = "mnist"\ntest_size = 0.2'],
)  # fmt: skip
def test_bad_data_table_is_one_line_and_no_run_folder(table, tmp_path, capsys):
    study = tmp_path / "bad.toml"
    study.write_text(f'protocol = "grid"\nselection = "test"\n[data]\n{table}\n'
                     '[space]\ntopology = ["T1"]\n')  # fmt: skip
    err = _refused(study, tmp_path, capsys)
    print(f"{table!r}: {err.strip()}")


def _refused(study: Path, tmp_path: Path, capsys) -> str:
    """`hpstudy run` on a bad study: non-zero, one line on stderr, no run folder."""
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", str(study), "--out", str(out), "--device", "cpu")
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and err.startswith("hpstudy run: error: "), err
    assert not out.exists()
    return err


def test_run_warns_about_test_images_that_copy_training_images(tmp_path, capsys):
    # _npz's default test split is the first 9 training images: all of them copies.
    path = _npz(tmp_path / "copies.npz")
    study = tmp_path / "copies.toml"
    study.write_text(
        'name = "copies"\nprotocol = "grid"\nselection = "test"\nmax_epochs = 1\n'
        f'[data]\npath = "{path.name}"\n'
        '[space]\ntopology = [[8]]\noptimizer = ["sgd"]\nlr = [0.1]\nactivation = ["relu"]\n'
    )
    code, _, err = _run(capsys, "run", str(study), "--out", str(tmp_path / "run"),
                        "--device", "cpu", "--no-report")  # fmt: skip
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "9 of 9 test examples" in warning[0], err
