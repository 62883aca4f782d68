"""Hostile inputs are refused in one line before they are read: bombs, sparse giants, FIFOs, NaN.

Each malformed file is built here (a gzip that inflates far past its IDX header, a header that
declares 2^31 images, a 10 GB sparse file, a FIFO, a PNG over Pillow's pixel limit, a model whose
weights hold NaN); the good inputs beside them are small slices of the real test set. Reads are
measured with tracemalloc: a refused input must cost kilobytes, not what it claims to hold.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import os
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from hpstudy.cli import main
from hpstudy.config.config import Config
from hpstudy.data import fashion_mnist, idx
from hpstudy.engine.model import build_mlp
from hpstudy.errors import DataError
from hpstudy.predict.modelfile import ModelFileError, load_model, save_model

TRAIN_IMAGES, TEST_LABELS = fashion_mnist.FILES["train_images"], fashion_mnist.FILES["test_labels"]
# What the bombs inflate to, far more than their headers declare: a 40 MB one is small enough
# on disk (40 KB) to pass for a gzip of a small file and be cut off while inflating; a 200 MB
# one is too large on disk for its header and is refused before inflating.
SMALL_BOMB, LARGE_BOMB = 40 * 2**20, 200 * 2**20
SPARSE_BYTES = 10**10  # a sparse file of this size takes no disk


def _header(magic: int, *dims: int) -> bytes:
    return b"".join(n.to_bytes(4, "big") for n in (magic, *dims))


@functools.cache
def _bomb(header: bytes, n_zeros: int = LARGE_BOMB) -> bytes:
    """A gzip of `header` followed by `n_zeros` zeros (a thousandth of that on disk)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    parts = [packer.compress(header)]
    zeros = bytes(2**20)
    parts += [packer.compress(zeros) for _ in range(n_zeros // len(zeros))]
    return b"".join([*parts, packer.flush()])


def _sparse(path: Path, head: bytes = b"") -> Path:
    with path.open("wb") as f:
        f.write(head)
        f.truncate(SPARSE_BYTES)
    return path


def _peak_while(call) -> tuple[BaseException | None, int]:
    """(what `call()` raised, peak bytes allocated by Python while it ran)."""
    tracemalloc.start()
    try:
        call()
    except Exception as exc:  # the test inspects it
        raised = exc
    else:
        raised = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return raised, peak


# --- the data folder ----------------------------------------------------------------------------


def _verify_fails(folder: Path, capsys, *fragments: str) -> str:
    """`hpstudy data verify` on `folder` fails with exit 3 and one line holding `fragments`."""
    capsys.readouterr()
    code = main(["data", "verify", "--data-dir", str(folder)])
    out, err = capsys.readouterr()
    assert code == DataError.exit_code and out == ""
    assert err.startswith("hpstudy data: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


@pytest.mark.parametrize(
    ("n_zeros", "problem"),
    [
        (SMALL_BOMB, "inflates past the 10,008 bytes its IDX header declares"),
        (LARGE_BOMB, "more than any gzip of the 10,008 bytes its IDX header declares"),
    ],
)
@pytest.mark.slow
def test_gzip_bomb_in_data_folder_is_cut_at_its_declared_size(n_zeros, problem, copy_dir, capsys):
    path = copy_dir / f"{TEST_LABELS}.gz"
    path.write_bytes(_bomb(_header(0x801, 10_000), n_zeros))  # declares 10,008 bytes
    raised, peak = _peak_while(lambda: fashion_mnist.read_canonical(path, TEST_LABELS))
    assert isinstance(raised, DataError) and problem in str(raised)
    assert peak < 8 * 2**20, f"read {peak:,} bytes of a bomb"
    _verify_fails(copy_dir, capsys, str(path), problem, "replace it")


def test_absurd_idx_dimensions_are_refused_before_reading(copy_dir, capsys):
    path = copy_dir / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(_bomb(_header(0x803, 2**31, 28, 28)))
    raised, peak = _peak_while(lambda: fashion_mnist.read_canonical(path, TRAIN_IMAGES))
    assert isinstance(raised, DataError), raised
    assert peak < 8 * 2**20, f"read {peak:,} bytes of a bomb"
    _verify_fails(copy_dir, capsys, str(path), "declares 2,147,483,648 images", "at most 60,000")


def test_huge_sparse_file_in_data_folder_is_refused_unread(copy_dir, capsys):
    (copy_dir / f"{TRAIN_IMAGES}.gz").unlink()
    path = _sparse(copy_dir / TRAIN_IMAGES, _header(0x803, 60_000, 28, 28))
    raised, peak = _peak_while(lambda: fashion_mnist.read_canonical(path, TRAIN_IMAGES))
    assert isinstance(raised, DataError), raised
    assert peak < 8 * 2**20, f"read {peak:,} bytes of a sparse file"
    _verify_fails(copy_dir, capsys, str(path), "10,000,000,000 bytes", "47,040,016")


def test_fifo_in_data_folder_is_named_as_such(copy_dir, capsys):
    (copy_dir / f"{TEST_LABELS}.gz").unlink()
    os.mkfifo(copy_dir / TEST_LABELS)
    _verify_fails(copy_dir, capsys, str(copy_dir / TEST_LABELS), "not a regular file")


# --- predict --------------------------------------------------------------------------------------


def _no_constants(name: str):
    raise AssertionError(f"non-standard JSON constant {name} in predict --json output")


def _predict(capsys, model: Path, *inputs: Path) -> tuple[int, list[dict], list[str]]:
    """`hpstudy predict --json`: (exit code, records, stderr lines); the JSON must be standard."""
    capsys.readouterr()
    code = main(["predict", "--model", str(model), *map(str, inputs), "--json"])
    out, err = capsys.readouterr()
    records = [json.loads(line, parse_constant=_no_constants) for line in out.splitlines()]
    assert "Traceback" not in err
    return code, records, err.splitlines()


def _save(path: Path, fill: dict[str, float] | None = None) -> Path:
    """An untrained T1 model (seeded); `fill` maps state_dict keys to one value for all entries."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_mlp(Config(topology="T1", optimizer="adam", lr=0.001))
    state = net.state_dict()
    for key, value in (fill or {}).items():
        state[key] = torch.full_like(state[key], value)
    return save_model(
        path,
        state_dict=state,
        config=Config(topology="T1", optimizer="adam", lr=0.001),
        normalization={"mean": fashion_mnist.PIXEL_MEAN, "std": fashion_mnist.PIXEL_STD},
        metrics={},
        data_digests={},
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp("model") / "model.pth")


@pytest.fixture
def good(fashion, tmp_path) -> Path:
    path = tmp_path / "good.png"
    Image.fromarray(fashion.test_images[0], mode="L").save(path)
    return path


def _refused(lines: list[str], path: Path, *fragments: str) -> str:
    """The one stderr line about `path`; it holds every fragment."""
    about = [line for line in lines if line.startswith(f"hpstudy predict: cannot classify {path}")]
    assert len(about) == 1, lines
    for fragment in fragments:
        assert fragment in about[0], f"{fragment!r} not in {about[0]!r}"
    return about[0]


def _check_refused(capsys, model: Path, bad: Path, good: Path, *fragments: str) -> str:
    """Predict [bad, good]: the good one is classified, the bad one reported, exit code 1."""
    code, records, lines = _predict(capsys, model, bad, good)
    assert [r["input"] for r in records] == [str(good)]
    assert code == 1
    assert (
        lines[-1] == "hpstudy predict: 1 input(s) could not be classified (see above); 1 classified"
    )
    return _refused(lines, bad, *fragments)


def _unblock_later(fifo: Path) -> threading.Event:
    """Should predict open the FIFO, let that open end after 10 s, and say so: a regression fails,
    not hangs. The event is set only if somebody was reading the FIFO then, so the tests judge
    by what happened to the FIFO, never by the clock (a loaded machine may take any time)."""
    was_read = threading.Event()

    def unblock() -> None:
        time.sleep(10)
        # OSError when nobody is reading: the FIFO was refused unopened, as it should be.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            was_read.set()

    threading.Thread(target=unblock, daemon=True).start()
    return was_read


def test_fifo_given_to_predict_is_refused_without_hanging(model, good, tmp_path, capsys):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)

    was_read = _unblock_later(fifo)
    _check_refused(capsys, model, fifo, good, "not a regular file")
    assert not was_read.is_set(), "predict opened the FIFO for reading"


def test_fifo_named_like_an_idx_file_is_refused(model, good, tmp_path, capsys):
    fifo = tmp_path / "t10k-images-idx3-ubyte"
    os.mkfifo(fifo)
    was_read = _unblock_later(fifo)
    _check_refused(capsys, model, fifo, good, "not a regular file")
    assert not was_read.is_set(), "predict opened the FIFO for reading"


def test_huge_sparse_idx_given_to_predict_is_refused_unread(model, good, tmp_path, capsys):
    bad = _sparse(tmp_path / "huge-idx3-ubyte", _header(0x803, 60_000, 28, 28))
    _check_refused(capsys, model, bad, good, "10,000,000,000 bytes", "47,040,016")


def test_huge_sparse_image_given_to_predict_is_refused_unopened(model, good, tmp_path, capsys):
    bad = _sparse(tmp_path / "huge.png", b"\x89PNG\r\n\x1a\n")
    _check_refused(capsys, model, bad, good, "10,000,000,000 bytes", "larger than")


def test_gzip_bomb_idx_given_to_predict_stops_past_its_header(model, good, tmp_path, capsys):
    bad = tmp_path / "bomb-idx3-ubyte.gz"
    bad.write_bytes(_bomb(_header(0x803, 10, 28, 28), SMALL_BOMB))
    _check_refused(capsys, model, bad, good, "inflates past the 7,856 bytes")


def test_idx_declaring_absurd_dimensions_given_to_predict(model, good, tmp_path, capsys):
    bad = tmp_path / "absurd-idx3-ubyte.gz"
    bad.write_bytes(_bomb(_header(0x803, 2**31, 28, 28)))
    _, peak = _peak_while(lambda: main(["predict", "--model", str(model), str(bad)]))
    assert peak < 16 * 2**20, f"read {peak:,} bytes of a bomb"
    _check_refused(capsys, model, bad, good, "declares 2,147,483,648 images")


@pytest.mark.parametrize("side", [40, 50])  # 1,600 pixels: Pillow warns; 2,500: Pillow refuses
def test_image_over_the_pixel_limit_is_refused(side, model, good, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    bad = tmp_path / "bomb.png"
    Image.new("L", (side, side)).save(bad)
    _check_refused(capsys, model, bad, good, "decompression bomb", "1,000 pixels")


# --- the model file -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_model_with_non_finite_weights_is_refused_at_load(value, model, good, tmp_path, capsys):
    payload = torch.load(model, weights_only=True)
    payload["state_dict"]["2.bias"][3] = value
    bad = tmp_path / "diverged.pth"
    torch.save(payload, bad)
    with pytest.raises(ModelFileError, match="NaN or infinity"):
        load_model(bad)
    code, records, lines = _predict(capsys, bad, good)
    assert code == ModelFileError.exit_code and records == []
    assert len(lines) == 1 and lines[0].startswith(f"hpstudy predict: error: {bad}: ")
    assert "'2.bias'" in lines[0] and "retrain" in lines[0]


def test_save_model_refuses_non_finite_weights_and_writes_nothing(tmp_path):
    with pytest.raises(ModelFileError, match="NaN or infinity"):
        _save(tmp_path / "nan.pth", fill={"0.weight": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_predict_json_never_prints_nan(fashion, good, tmp_path, capsys):
    # Finite but huge weights: every hidden unit is 1e30, every logit +inf, softmax gives NaN.
    fill = {"0.weight": 0.0, "0.bias": 1e30, "2.weight": 1e30, "2.bias": 0.0}
    overflowing = _save(tmp_path / "overflow.pth", fill=fill)
    code, records, lines = _predict(capsys, overflowing, good)  # parse_constant raises on NaN
    assert records == [] and code == 1
    _refused(lines, good, "not finite")


def test_good_inputs_still_classify_exactly(model, fashion, tmp_path, capsys):
    """The bounded reader changes nothing for a real IDX slice, gzipped or not."""
    images = fashion.test_images[:50]
    content = _header(0x803, *images.shape) + images.tobytes()
    plain, packed = tmp_path / "s-idx3-ubyte", tmp_path / "s-idx3-ubyte.gz"
    plain.write_bytes(content)
    packed.write_bytes(gzip.compress(content))
    code, records, _ = _predict(capsys, model, plain, packed)
    assert code == 0 and len(records) == 100
    assert [r["class"] for r in records[:50]] == [r["class"] for r in records[50:]]
    bounds = {"magic": idx.IMAGES_MAGIC, "max_count": 50, "fix": "", "shape": (28, 28)}
    assert idx.read_bytes(packed, **bounds) == idx.read_bytes(plain, **bounds) == content
