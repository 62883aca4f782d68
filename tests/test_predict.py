"""`hpstudy predict` and the model file, with a real model trained on the real data.

The session fixture trains T1 with Adam for one epoch in plain torch (a few seconds), records its
test accuracy in the model file, and every test classifies through the CLI in-process.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import pathlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hpstudy.cli import main
from hpstudy.config.config import Config
from hpstudy.data import fashion_mnist
from hpstudy.engine.model import build_mlp
from hpstudy.predict import classify as predict
from hpstudy.predict.modelfile import ModelFileError, load_model, save_model


@dataclass(frozen=True)
class Trained:
    path: Path  # the saved model file
    accuracy: float  # test accuracy, as recorded in the file
    predictions: np.ndarray  # (10000,) predicted class of each test image


def _inputs(images: np.ndarray) -> torch.Tensor:
    """Plain torch, independent of hpstudy.predict.classify: (N, 28, 28) uint8 -> (N, 784)."""
    x = torch.from_numpy(images.copy()).reshape(len(images), -1).float() / 255  # copy: writable
    return (x - fashion_mnist.PIXEL_MEAN) / fashion_mnist.PIXEL_STD


@contextlib.contextmanager
def _one_thread():
    """One torch thread: on a shared 2-core machine, threads fighting over cores make these
    small matmuls ten times slower (measured: 2 s against 20-40 s for the training epoch)."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


@pytest.fixture(scope="module", autouse=True)
def _single_threaded():
    with _one_thread():
        yield


@pytest.fixture(scope="session")
def trained(fashion, tmp_path_factory) -> Trained:
    # Session-scoped fixtures start before module-scoped ones: take the one thread here too.
    with _one_thread(), torch.random.fork_rng(devices=[]):  # and leave the global RNG alone
        torch.manual_seed(0)
        config = Config(topology="T1", optimizer="adam", lr=0.001)
        net = build_mlp(config)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        x, y = _inputs(fashion.train_images), torch.from_numpy(fashion.train_labels)
        for batch in torch.randperm(len(y)).split(64):
            optimizer.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            predictions = net(_inputs(fashion.test_images)).argmax(dim=1).numpy()
    accuracy = float((predictions == fashion.test_labels).sum()) / len(predictions)
    path = save_model(
        tmp_path_factory.mktemp("model") / "final_best_model.pth",
        state_dict=net.state_dict(),
        config=config,
        normalization={"mean": fashion_mnist.PIXEL_MEAN, "std": fashion_mnist.PIXEL_STD},
        metrics={"test_accuracy": accuracy},
        data_digests=fashion.digests,
    )
    return Trained(path=path, accuracy=accuracy, predictions=predictions)


def _predict(capsys, *args: str) -> tuple[int, list[dict], str]:
    """Run `hpstudy predict ... --json` in-process: (exit code, records, stderr)."""
    capsys.readouterr()  # drop anything printed before
    code = main(["predict", *args, "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels, mode="L").save(path)
    return path


@pytest.fixture(scope="module")
def test_pngs(fashion, tmp_path_factory) -> Path:
    """The 10,000 test images as PNG files named <index>_<label>.png."""
    folder = tmp_path_factory.mktemp("t10k")
    for i, (pixels, label) in enumerate(zip(fashion.test_images, fashion.test_labels, strict=True)):
        _write_png(folder / f"{i:05d}_{label}.png", pixels)
    return folder


def _accuracy(records: list[dict]) -> float:
    labels = [fashion_mnist.CLASS_NAMES[int(Path(r["input"]).stem.split("_")[1])] for r in records]
    return sum(r["class"] == label for r, label in zip(records, labels, strict=True)) / len(labels)


@pytest.mark.slow
def test_model_saved_by_a_study_predicts_the_test_pngs_with_its_recorded_accuracy(
    test_pngs, tmp_path, capsys
):
    run_dir = tmp_path / "paper"
    args = ["run", "paper", "--max-epochs", "1", "--limit-train", "1000", "--no-report"]
    assert main([*args, "--out", str(run_dir)]) == 0
    model = run_dir / "final_best_model.pth"
    recorded = torch.load(model, weights_only=True)["metadata"]["metrics"]["test_accuracy"]

    code, records, err = _predict(capsys, "--model", str(model), str(test_pngs))

    assert code == 0, err
    assert len(records) == fashion_mnist.N_TEST
    assert _accuracy(records) == recorded


@pytest.mark.slow
def test_test_set_as_pngs_gives_exactly_the_recorded_accuracy(trained, test_pngs, capsys):
    folder = test_pngs
    code, records, err = _predict(capsys, "--model", str(trained.path), str(folder))

    assert code == 0, err
    assert len(records) == fashion_mnist.N_TEST
    assert [Path(r["input"]).name for r in records] == sorted(p.name for p in folder.iterdir())
    recorded = torch.load(trained.path, weights_only=True)["metadata"]["metrics"]["test_accuracy"]
    assert _accuracy(records) == recorded == trained.accuracy
    expected = [fashion_mnist.CLASS_NAMES[c] for c in trained.predictions]
    assert [r["class"] for r in records] == expected
    first = records[0]
    assert set(first) == {"input", "class", "top3"}
    assert first["top3"][0]["class"] == first["class"]
    assert [set(t) for t in first["top3"]] == [{"class", "probability"}] * 3
    probabilities = [t["probability"] for t in first["top3"]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-5


def test_png_of_a_dataset_image_is_used_pixel_for_pixel(fashion, tmp_path):
    for i in (0, 1, 42):
        png = _write_png(tmp_path / f"{i}.png", fashion.test_images[i])
        pixels, inverted = predict.prepare(predict.InputImage(str(png), png))
        assert not inverted
        np.testing.assert_array_equal(pixels, fashion.test_images[i])


class _TouchOnUnpickle:
    """Unpickling this runs pathlib.Path.touch(marker): code execution, made visible."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_is_refused_and_never_runs(
    writer, trained, fashion, tmp_path, capsys
):
    # The payload is live: plain unpickling does run it.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_TouchOnUnpickle(proof)))
    assert proof.exists()

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    payload = {"format": "hpstudy-model", "schema_version": 1, "x": _TouchOnUnpickle(marker)}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        with evil.open("wb") as f:
            pickle.dump(payload, f)
    image = _write_png(tmp_path / "a.png", fashion.test_images[0])

    code, records, err = _predict(capsys, "--model", str(evil), str(image))

    assert not marker.exists()
    assert code != 0
    assert records == []
    assert str(evil) in err and "executable pickle content" in err and "not loaded" in err
    assert "pathlib" in err  # names what it would have called
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ModelFileError, match="executable pickle content"):
        load_model(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda raw: raw[: len(raw) // 2], "truncated"),
        (lambda raw: raw[:100], "truncated"),
        (lambda raw: b"", "empty"),
        (lambda raw: b"this is a text file, not a model\n", "not a PyTorch model file"),
    ],
    ids=["half", "100-bytes", "empty", "text"],
)
def test_damaged_model_file_gets_one_clear_line(
    damage, expected, trained, fashion, tmp_path, capsys
):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(damage(trained.path.read_bytes()))
    image = _write_png(tmp_path / "a.png", fashion.test_images[0])

    code, records, err = _predict(capsys, "--model", str(bad), str(image))

    assert code != 0 and records == []
    assert str(bad) in err and expected in err
    assert len(err.strip().splitlines()) == 1


def test_missing_model_file(tmp_path, capsys):
    code, records, err = _predict(capsys, "--model", str(tmp_path / "nope.pth"), str(tmp_path))
    assert code != 0 and records == [] and "no model file" in err


def _resave(trained: Trained, path: Path, change) -> Path:
    payload = torch.load(trained.path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def test_state_dict_that_does_not_match_its_metadata_is_refused(trained, tmp_path, capsys):
    def shrink(payload):
        payload["state_dict"]["0.weight"] = torch.zeros(64, 784)

    bad = _resave(trained, tmp_path / "bad.pth", shrink)
    code, records, err = _predict(capsys, "--model", str(bad), str(tmp_path))
    assert code != 0 and records == []
    assert "'0.weight'" in err and "(64, 784)" in err and "(128, 784)" in err

    def drop(payload):
        del payload["state_dict"]["2.bias"]

    with pytest.raises(ModelFileError, match=r"missing \['2.bias'\]"):
        load_model(_resave(trained, tmp_path / "missing.pth", drop))


def test_torch_file_that_is_not_an_hpstudy_model_is_refused(trained, tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save(torch.load(trained.path, weights_only=True)["state_dict"], plain)
    with pytest.raises(ModelFileError, match="not an hpstudy model"):
        load_model(plain)

    def future(payload):
        payload["schema_version"] = 99

    with pytest.raises(ModelFileError, match="schema_version=99"):
        load_model(_resave(trained, tmp_path / "future.pth", future))


def test_saved_model_round_trips_with_weights_only(trained, fashion):
    payload = torch.load(trained.path, weights_only=True)
    assert payload["format"] == "hpstudy-model" and payload["schema_version"] == 1
    meta = payload["metadata"]
    assert meta["class_names"] == list(fashion_mnist.CLASS_NAMES)
    assert meta["normalization"] == {
        "mean": fashion_mnist.PIXEL_MEAN,
        "std": fashion_mnist.PIXEL_STD,
    }
    assert meta["data_digests"] == fashion.digests
    assert set(meta["versions"]) == {"hpstudy", "torch", "python"}
    loaded = load_model(trained.path)
    assert not loaded.model.training
    assert loaded.config == Config(topology="T1", optimizer="adam", lr=0.001)
    with torch.no_grad():
        again = loaded.model(_inputs(fashion.test_images[:500])).argmax(dim=1).numpy()
    np.testing.assert_array_equal(again, trained.predictions[:500])


def test_save_model_refuses_mismatched_weights_and_leaves_no_file(tmp_path):
    config = Config(topology="T1")
    state = build_mlp(Config(topology="T2")).state_dict()
    norm = {"mean": fashion_mnist.PIXEL_MEAN, "std": fashion_mnist.PIXEL_STD}
    with pytest.raises(ModelFileError, match="state_dict keys do not match"):
        save_model(
            tmp_path / "m.pth",
            state_dict=state,
            config=config,
            normalization=norm,
            metrics={},
            data_digests={},
        )
    with pytest.raises(TypeError, match="extra\\['when'\\]"):
        save_model(
            tmp_path / "m.pth",
            state_dict=build_mlp(config).state_dict(),
            config=config,
            normalization=norm,
            metrics={},
            data_digests={},
            extra={"when": object()},
        )
    assert list(tmp_path.iterdir()) == []


def test_broken_image_is_reported_by_name_and_the_others_classified(
    trained, fashion, tmp_path, capsys
):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        _write_png(folder / f"good{i}.png", fashion.test_images[i])
    (folder / "broken.png").write_bytes(np.random.default_rng(0).bytes(500))
    half = (folder / "good0.png").read_bytes()
    (folder / "cut.png").write_bytes(half[: len(half) // 2])
    (folder / "notes.txt").write_text("not an image, and not an image suffix: skipped")

    code, records, err = _predict(capsys, "--model", str(trained.path), str(folder))

    assert code == 1
    assert [Path(r["input"]).name for r in records] == ["good0.png", "good1.png", "good2.png"]
    assert [r["class"] for r in records] == [
        fashion_mnist.CLASS_NAMES[c] for c in trained.predictions[:3]
    ]
    assert str(folder / "broken.png") in err and str(folder / "cut.png") in err
    assert "notes.txt" not in err
    assert "2 input(s) could not be classified" in err


def test_missing_input_is_reported_and_others_classified(trained, fashion, tmp_path, capsys):
    good = _write_png(tmp_path / "good.png", fashion.test_images[0])
    code, records, err = _predict(
        capsys, "--model", str(trained.path), str(tmp_path / "gone.png"), str(good)
    )
    assert code == 1 and len(records) == 1
    assert f"{tmp_path / 'gone.png'}: no such file" in err


def _photo(pixels: np.ndarray) -> Image.Image:
    """A photo-like RGB picture: the garment dark on white, in the middle of a 100 x 80 canvas."""
    canvas = Image.new("RGB", (100, 80), (255, 255, 255))
    canvas.paste(Image.fromarray(255 - pixels, mode="L").convert("RGB"), (36, 26))
    return canvas


def test_photo_with_white_background_is_inverted_and_classified(trained, fashion, tmp_path, capsys):
    loaded = load_model(trained.path)
    with torch.no_grad():
        probs = torch.softmax(loaded.model(_inputs(fashion.test_images[:200])), dim=1)
    confident = (probs.argmax(dim=1).numpy() == fashion.test_labels[:200]) & (
        probs.max(dim=1).values.numpy() > 0.9
    )
    i = int(np.flatnonzero(confident)[0])  # an image the model gets right in its original form
    true_class = fashion_mnist.CLASS_NAMES[fashion.test_labels[i]]
    photo = tmp_path / "photo.jpg"
    _photo(fashion.test_images[i]).save(photo, quality=95)

    code, records, err = _predict(capsys, "--model", str(trained.path), str(photo))
    assert code == 0, err
    assert records[0]["class"] == true_class

    pixels, inverted = predict.prepare(predict.InputImage(str(photo), photo), "auto")
    assert inverted and pixels.shape == (28, 28)
    assert pixels[0, 0] < 30 and pixels.max() > 200  # dark background, light garment

    pixels, inverted = predict.prepare(predict.InputImage(str(photo), photo), "never")
    assert not inverted and pixels[0, 0] > 225  # the white background stays white
    code, never, err = _predict(
        capsys, "--model", str(trained.path), str(photo), "--invert", "never"
    )
    assert code == 0, err
    assert never[0]["top3"] != records[0]["top3"]


def test_invert_always_inverts_a_dataset_image(fashion, tmp_path):
    png = _write_png(tmp_path / "a.png", fashion.test_images[0])
    pixels, inverted = predict.prepare(predict.InputImage(str(png), png), "always")
    assert inverted
    np.testing.assert_array_equal(pixels, 255 - fashion.test_images[0])


def _write_idx(path: Path, images: np.ndarray) -> Path:
    header = (0x803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in images.shape)
    content = header + images.tobytes()
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


@pytest.mark.parametrize("name", ["sample-idx3-ubyte", "sample-idx3-ubyte.gz"])
def test_idx_input(name, trained, fashion, tmp_path, capsys):
    idx = _write_idx(tmp_path / name, fashion.test_images[:300])

    code, records, err = _predict(capsys, "--model", str(trained.path), str(idx))

    assert code == 0, err
    assert [r["input"] for r in records] == [f"{idx}#{i}" for i in range(300)]
    assert [r["class"] for r in records] == [
        fashion_mnist.CLASS_NAMES[c] for c in trained.predictions[:300]
    ]


def test_bad_idx_file_is_reported(trained, fashion, tmp_path, capsys):
    idx = tmp_path / "bad-idx3-ubyte"
    idx.write_bytes(b"\x00\x00\x08\x01" + bytes(20))  # a labels magic number
    good = _write_png(tmp_path / "good.png", fashion.test_images[0])
    code, records, err = _predict(capsys, "--model", str(trained.path), str(idx), str(good))
    assert code == 1 and len(records) == 1
    assert str(idx) in err and "not an IDX image file" in err


def test_table_output(trained, fashion, tmp_path, capsys):
    for i in range(2):
        _write_png(tmp_path / f"img{i}.png", fashion.test_images[i])
    capsys.readouterr()
    assert main(["predict", "--model", str(trained.path), str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["INPUT", "CLASS", "INV", "TOP-3"]
    assert len(lines) == 3
    for i, line in enumerate(lines[1:]):
        assert line.startswith(str(tmp_path / f"img{i}.png"))
        assert fashion_mnist.CLASS_NAMES[trained.predictions[i]] in line


def test_batch_size_must_be_positive(trained, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--model", str(trained.path), str(tmp_path), "--batch-size", "0"])
    assert exc.value.code == 2
    assert "--batch-size: must be an integer >= 1, got '0'" in capsys.readouterr().err
