"""Datasets a study trains on: digits, the user's own files, bad data refused, MNIST downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hpstudy.data import catalog, download, fashion_mnist, userdata
from hpstudy.data.dataset import pixel_statistics
from hpstudy.data.datasets import load_dataset
from hpstudy.errors import DataError, UserError
from test_download import Mirror  # the local HTTP mirror of its tests

DIGITS = {"name": "digits", "test_size": 0.2, "split_seed": 7}


# --- digits -----------------------------------------------------------------------------------


def test_digits_shapes_classes_and_a_stratified_split():
    ds = load_dataset(DIGITS)
    assert ds.x_train.shape == (1438, 8, 8) and ds.x_test.shape == (359, 8, 8)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.input_shape == (8, 8) and ds.input_size == 64 and ds.n_classes == 10
    # Stratified: each class's share of the test split is its share of all 1,797, to one image.
    total = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert np.all(np.abs(np.bincount(ds.y_test) - total * 359 / 1797) < 1)


def test_digits_split_is_reproducible_by_seed():
    first, again = load_dataset(DIGITS), load_dataset(DIGITS)
    other = load_dataset({**DIGITS, "split_seed": 8})
    assert np.array_equal(first.x_test, again.x_test) and np.array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.x_test, other.x_test)


def test_digits_needs_a_test_size_and_seed():
    with pytest.raises(UserError, match=r"give test_size .* and split_seed"):
        load_dataset({"name": "digits"})
    with pytest.raises(UserError, match=r"got test_size=1\.5"):
        load_dataset({**DIGITS, "test_size": 1.5})


def test_auto_normalization_is_the_training_pixels_mean_and_std():
    ds = load_dataset(DIGITS)
    mean, std = pixel_statistics(ds.x_train, ds.name)
    pixels = ds.x_train.astype(np.float64) / 255
    assert (mean, std) == pytest.approx((pixels.mean(), pixels.std()), abs=1e-12)


def test_exactly_one_of_name_and_path():
    with pytest.raises(UserError, match="exactly one of name"):
        load_dataset({"name": "mnist", "path": "x.npz"})
    with pytest.raises(UserError, match=r"name must be one of .*got name='cifar'"):
        load_dataset({"name": "cifar"})


# --- the user's own data ----------------------------------------------------------------------


def _arrays(k: int = 3, side: int = 12, n_train: int = 30, n_test: int = 9) -> dict:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "y_train": np.arange(n_train) % k,
        "x_test": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "y_test": np.arange(n_test) % k,
    }


def _npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return path


def test_user_npz_with_three_classes_of_12x12_images(tmp_path):
    classes = np.array(["circle", "square", "triangle"])
    path = _npz(tmp_path, **_arrays(), classes=classes)
    ds = load_dataset({"path": str(path)})
    assert ds.input_shape == (12, 12) and ds.input_size == 144
    assert ds.n_classes == 3 and ds.class_names == ("circle", "square", "triangle")
    assert ds.digests == {"mine.npz": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert ds.warnings == () and ds.n_overlap == 0
    assert not ds.x_train.flags.writeable  # a frozen value


def test_user_npz_of_float_features_without_class_names(tmp_path):
    arrays = _arrays()
    arrays["x_train"] = arrays["x_train"].reshape(30, -1).astype(np.float64)
    arrays["x_test"] = arrays["x_test"].reshape(9, -1).astype(np.float64)
    ds = load_dataset({"path": str(_npz(tmp_path, **arrays))})
    assert ds.x_train.dtype == np.float32 and ds.input_shape == (144,)
    assert ds.class_names == ("0", "1", "2")
    mean, _ = pixel_statistics(ds.x_train, ds.name)  # raw values: no / 255
    assert mean == pytest.approx(arrays["x_train"].mean(), rel=1e-6)


def test_user_idx_folder_of_any_image_size(tmp_path):
    arrays = _arrays(side=5)
    for key, name in zip(userdata.ARRAYS, fashion_mnist.FILES.values(), strict=True):
        a = arrays[key].astype(np.uint8)
        magic = 0x803 if a.ndim == 3 else 0x801
        (tmp_path / name).write_bytes(struct.pack(f">{a.ndim + 1}I", magic, *a.shape) + a.tobytes())
    ds = load_dataset({"path": str(tmp_path)})
    assert ds.input_shape == (5, 5) and ds.n_classes == 3
    assert np.array_equal(ds.x_test, arrays["x_test"]) and set(ds.digests) == set(
        fashion_mnist.FILES.values()
    )


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"y_test": np.array([0, 1, 3] * 3)}, "y_test holds label 3 outside 0..2 (3 classes)"),
        ({"y_train": np.array([-1] + [0, 1, 2] * 9 + [0, 1])}, "y_train holds label -1 outside"),
        ({"y_train": np.arange(30) % 2}, "class 2 ('triangle') has no example in y_train"),
        ({"y_train": np.arange(29) % 3}, "x_train holds 30 examples but y_train 29 labels"),
        ({"x_train": np.full((30, 12, 12), np.nan)}, "x_train holds 4,320 NaN or infinite"),
        ({"x_test": np.full((9, 12, 12), np.inf)}, "x_test holds 1,296 NaN or infinite"),
        ({"x_train": np.zeros((30, 12, 12), np.int64)}, "x_train has dtype int64; expected uint8"),
        ({"y_train": np.zeros(30, np.float32)}, "y_train has dtype float32; expected integer"),
        ({"x_test": np.zeros((0, 12, 12), np.uint8)}, "x_test is empty (shape (0, 12, 12))"),
        ({"y_test": np.zeros(0, np.int64)}, "y_test is empty"),
    ],
)
def test_bad_user_data_is_one_line_naming_file_problem_and_fix(tmp_path, change, fragment):
    classes = np.array(["circle", "square", "triangle"])
    path = _npz(tmp_path, **{**_arrays(), **change}, classes=classes)
    with pytest.raises(DataError) as info:
        load_dataset({"path": str(path)})
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert fragment in message, message


def test_missing_array_and_pickled_objects_are_refused(tmp_path):
    arrays = _arrays()
    del arrays["y_test"]
    with pytest.raises(DataError, match=r"lacks y_test \(it holds x_test, x_train, y_train\)"):
        load_dataset({"path": str(_npz(tmp_path, **arrays))})
    objects = np.array([object()] * 30, dtype=object)
    path = _npz(tmp_path, **{**_arrays(), "y_train": objects})
    with pytest.raises(DataError, match=r"holds Python objects .* never unpickles"):
        load_dataset({"path": str(path)})


def test_overlapping_test_split_is_a_warning_with_the_count(tmp_path):
    arrays = _arrays()
    arrays["x_test"][[1, 4]] = arrays["x_train"][[0, 17]]
    ds = load_dataset({"path": str(_npz(tmp_path, **arrays))})
    assert ds.n_overlap == 2
    assert len(ds.warnings) == 1 and ds.warnings[0].startswith("2 of 9 test examples in ")


def test_absurd_declared_npz_array_is_refused_before_reading(tmp_path, monkeypatch):
    # A header declaring 2^40 float64 values, followed by 8 bytes: nothing to read, and nothing
    # may be read, or allocating would fail first.
    header = io.BytesIO()
    meta = {"descr": "<f8", "fortran_order": False, "shape": (2**20, 2**20)}
    np.lib.format.write_array_header_1_0(header, meta)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + bytes(8))
        for key, value in _arrays().items():
            if key != "x_train":
                buffer = io.BytesIO()
                np.save(buffer, value)
                archive.writestr(f"{key}.npy", buffer.getvalue())
    read = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: read.append(a))
    with pytest.raises(DataError) as info:
        load_dataset({"path": str(path)})
    assert "x_train declares shape (1048576, 1048576) of float64 (8,796,093,022,208 bytes)" in str(
        info.value
    )
    assert "refused before reading it" in str(info.value) and read == []


# --- MNIST and KMNIST from their mirrors ------------------------------------------------------


def _idx(kind: str, n: int) -> bytes:
    rng = np.random.default_rng(len(kind) + n)
    if kind == "images":
        return (
            struct.pack(">4I", 0x803, n, 28, 28)
            + rng.integers(0, 256, n * 784).astype(np.uint8).tobytes()
        )
    return struct.pack(">2I", 0x801, n) + (np.arange(n) % 10).astype(np.uint8).tobytes()


@pytest.fixture
def small_source(monkeypatch, tmp_path):
    """MNIST with small files on a local mirror, its digest table overridden to theirs."""
    gz = {
        name: gzip.compress(_idx("images" if "idx3" in name else "labels", n), mtime=0)
        for name, n in zip(fashion_mnist.FILES.values(), (50, 50, 20, 20), strict=True)
    }
    digests = {n: hashlib.sha256(b).hexdigest() for n, b in gz.items()}
    monkeypatch.setitem(catalog.SOURCES, "mnist", replace(catalog.MNIST, gz_sha256=digests))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    mirror = Mirror({f"/{name}.gz": body for name, body in gz.items()})
    monkeypatch.setenv(catalog.MNIST.mirrors_env, mirror.url)
    yield mirror, gz
    mirror.close()


def test_mnist_downloads_verifies_and_keeps_the_published_gz(small_source):
    mirror, gz = small_source
    lines: list[str] = []
    ds = load_dataset({"name": "mnist"}, progress=lines.append)
    cache = catalog.MNIST.cache_dir()
    assert ds.source == cache and ds.x_train.shape == (50, 28, 28) and ds.n_classes == 10
    assert sorted(p.name for p in cache.iterdir()) == sorted([".lock", *(f"{n}.gz" for n in gz)])
    for name, body in gz.items():
        assert (cache / f"{name}.gz").read_bytes() == body  # byte for byte as served
        assert ds.digests[f"{name}.gz"] == hashlib.sha256(body).hexdigest()
        assert ds.digests[name] == hashlib.sha256(gzip.decompress(body)).hexdigest()
    assert any(line.startswith(f"saved {cache}") for line in lines)
    # The second load finds the cache: no request more.
    n_requests = len(mirror.requests)
    assert load_dataset({"name": "mnist"}).digests == ds.digests
    assert len(mirror.requests) == n_requests == 4


def test_mnist_mirror_serving_other_bytes_is_refused(small_source, monkeypatch):
    monkeypatch.setitem(
        catalog.SOURCES["mnist"].gz_sha256, fashion_mnist.FILES["train_images"], "0" * 64
    )
    with pytest.raises(DataError) as info:
        load_dataset({"name": "mnist"})
    message = str(info.value)
    assert message.startswith("could not download MNIST: ") and "expected " + "0" * 64 in message
    assert "SHA-256" in message and "of the .gz" in message and "HPSTUDY_MNIST_MIRRORS" in message


def test_mnist_uncompressed_copy_cannot_be_verified(small_source, tmp_path):
    _, gz = small_source
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, body in gz.items():
        (folder / name).write_bytes(gzip.decompress(body))
    with pytest.raises(DataError, match="not gzip-compressed, and only the SHA-256 of the pub"):
        load_dataset({"name": "mnist"}, folder)


def test_kmnist_has_its_own_cache_and_mirrors(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert catalog.KMNIST.cache_dir() == tmp_path / "hpstudy" / "kmnist"
    assert download.resolve_mirrors(
        defaults=catalog.KMNIST.mirrors, env=catalog.KMNIST.mirrors_env
    )[0].startswith("https://codh.rois.ac.jp/kmnist/")
    with pytest.raises(DataError, match="Kuzushiji-MNIST not found in"):
        load_dataset({"name": "kmnist"}, download=False)


class _Warned(Exception):
    pass


def test_a_worker_is_told_the_data_warnings_a_run_is_told(tmp_path):
    """`hpstudy worker` shows the overlap warning before it joins the study, as `hpstudy run`
    does (the callback stops it there: nothing is trained)."""
    from hpstudy.config.studyfile import parse_study
    from hpstudy.protocols.events import DataWarning
    from hpstudy.runner.execute import run_worker
    from hpstudy.runner.options import RunOptions

    arrays = _arrays()
    arrays["x_test"][[1, 4]] = arrays["x_train"][[0, 17]]
    _npz(tmp_path, **arrays)
    text = ('protocol = "grid"\nselection = "test"\n[data]\npath = "mine.npz"\n'
            '[space]\ntopology = [[16]]\n')  # fmt: skip
    study = parse_study(text, tmp_path / "mine.toml")
    seen = []

    def on_event(event):
        if isinstance(event, DataWarning):
            seen.append(event.text)
            raise _Warned

    options = RunOptions(storage=f"journal://{tmp_path / 'study.log'}", threads=1)
    with pytest.raises(_Warned):
        run_worker(study, options, on_event=on_event)
    assert len(seen) == 1 and seen[0].startswith("2 of 9 test examples in ")
    assert not (tmp_path / "study.log").exists()  # told before joining the study
