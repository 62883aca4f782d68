"""The canonical data and every way a damaged copy is refused (hpstudy.data.fashion_mnist,
`hpstudy data`)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from hpstudy.cli import main
from hpstudy.data import fashion_mnist, sources
from hpstudy.data.dataset import stratified_split
from hpstudy.errors import DataError

TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


# --- the real files ---------------------------------------------------------------------------


def test_digests_are_the_published_ones(fashion):
    # ../shared/DESIGN.md, typed out here rather than read back from fashion_mnist.SHA256.
    published = {
        "train-images-idx3-ubyte": (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
        ),
        "train-labels-idx1-ubyte": (
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
        ),
        "t10k-images-idx3-ubyte": (
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
        ),
        "t10k-labels-idx1-ubyte": (
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
        ),
    }
    assert fashion.digests == published == fashion_mnist.SHA256


def test_shapes_and_dtypes(fashion):
    assert fashion.train_images.shape == (60_000, 28, 28)
    assert fashion.test_images.shape == (10_000, 28, 28)
    assert fashion.train_labels.shape == (60_000,)
    assert fashion.test_labels.shape == (10_000,)
    assert fashion.train_images.dtype == np.uint8
    assert fashion.train_labels.dtype == np.int64
    # Known first labels of the canonical files: Ankle boot, then T-shirt/top; Ankle boot, Pullover.
    assert fashion.train_labels[:3].tolist() == [9, 0, 0]
    assert fashion.test_labels[:3].tolist() == [9, 2, 1]


def test_class_balance(fashion):
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert (
        fashion_mnist.CLASS_NAMES[0] == "T-shirt/top"
        and fashion_mnist.CLASS_NAMES[9] == "Ankle boot"
    )


def test_pixel_statistics(fashion):
    images = fashion.train_images  # dtype= accumulates in float64 without a float copy
    assert images.mean(dtype=np.float64) / 255 == pytest.approx(fashion_mnist.PIXEL_MEAN, abs=1e-12)
    assert np.sqrt(images.var(dtype=np.float64)) / 255 == pytest.approx(
        fashion_mnist.PIXEL_STD, abs=1e-12
    )
    assert (
        round(fashion_mnist.PIXEL_MEAN, 4) == 0.2860 and round(fashion_mnist.PIXEL_STD, 4) == 0.3530
    )


def test_stratified_split(fashion):
    labels = fashion.train_labels
    train_idx, val_idx = stratified_split(labels, 10_000, seed=42)
    assert len(val_idx) == 10_000 and len(train_idx) == 50_000
    assert np.intersect1d(train_idx, val_idx).size == 0
    assert np.array_equal(np.union1d(train_idx, val_idx), np.arange(60_000))
    assert np.bincount(labels[val_idx]).tolist() == [1000] * 10
    _, again = stratified_split(labels, 10_000, seed=42)
    assert np.array_equal(again, val_idx)
    other = stratified_split(labels, 10_000, seed=43)[1]
    assert not np.array_equal(other, val_idx)


def test_stratified_split_uneven_quota_sums_exactly():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 3)
    _, val_idx = stratified_split(labels, 4, seed=0)
    assert len(val_idx) == 4
    assert np.bincount(labels[val_idx], minlength=3).tolist() == [2, 1, 1]
    with pytest.raises(DataError, match="between 1 and 14, got 15"):
        stratified_split(labels, 15, seed=0)


def test_uncompressed_files_load_the_same(fashion, tmp_path):
    for name in fashion_mnist.FILES.values():
        raw = gzip.decompress((fashion_mnist.DEBIAN_DIR / f"{name}.gz").read_bytes())
        (tmp_path / name).write_bytes(raw)
    ds = sources.load(tmp_path)
    assert ds.source == tmp_path
    assert ds.digests == fashion.digests
    assert np.array_equal(ds.test_images, fashion.test_images)


def test_verify_command_prints_digests(capsys):
    assert main(["data", "verify", "--data-dir", str(fashion_mnist.DEBIAN_DIR)]) == 0
    out = capsys.readouterr().out
    assert f"verified in {fashion_mnist.DEBIAN_DIR}" in out
    for name, digest in fashion_mnist.SHA256.items():
        assert f"{name}" in out and digest in out


# --- damaged copies ---------------------------------------------------------------------------


def _raw(name: str) -> bytes:
    return gzip.decompress((fashion_mnist.DEBIAN_DIR / f"{name}.gz").read_bytes())


def _replace_raw(folder: Path, name: str, content: bytes) -> Path:
    """Swap `name.gz` for an uncompressed `name` holding `content`."""
    (folder / f"{name}.gz").unlink()
    path = folder / name
    path.write_bytes(content)
    return path


def _fails(folder: Path, capsys, *fragments: str) -> str:
    """Run `hpstudy data verify` on `folder`; it must fail with one line holding `fragments`."""
    before = sorted((p.name, p.stat().st_size) for p in folder.iterdir())
    code = main(["data", "verify", "--data-dir", str(folder)])
    captured = capsys.readouterr()
    assert code == DataError.exit_code == 3
    assert captured.out == ""
    message = captured.err
    assert message.startswith("hpstudy data: error: ")
    assert message.endswith("\n") and message.count("\n") == 1, message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # Verification never writes: the folder is exactly as it was.
    assert sorted((p.name, p.stat().st_size) for p in folder.iterdir()) == before
    return message


def test_truncated_gzip(copy_dir, capsys):
    path = copy_dir / f"{TRAIN_LABELS}.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _fails(copy_dir, capsys, str(path), "is truncated", "gzip stream ends early", "replace it")


def test_truncated_uncompressed(copy_dir, capsys):
    path = _replace_raw(copy_dir, TEST_LABELS, _raw(TEST_LABELS)[:-100])
    _fails(copy_dir, capsys, str(path), "is truncated", "9,900 data bytes", "expected 10,000")


def test_corrupted_gzip_stream(copy_dir, capsys):
    path = copy_dir / f"{TRAIN_LABELS}.gz"
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])
    path.write_bytes(bytes(raw))
    _fails(copy_dir, capsys, str(path), "damaged gzip file")


def test_wrong_checksum_names_file_digests_and_fix(copy_dir, capsys):
    content = bytearray(_raw(TEST_LABELS))
    content[8] = (content[8] + 1) % 10  # a different, still valid label: only the digest differs
    path = _replace_raw(copy_dir, TEST_LABELS, bytes(content))
    actual = hashlib.sha256(content).hexdigest()
    message = _fails(
        copy_dir,
        capsys,
        str(path),
        f"not the canonical {TEST_LABELS}",
        f"SHA-256 {actual}",
        f"expected {fashion_mnist.SHA256[TEST_LABELS]}",
        "replace it with the canonical file",
    )
    assert actual != fashion_mnist.SHA256[TEST_LABELS]
    assert message.index(actual) < message.index(fashion_mnist.SHA256[TEST_LABELS])


def test_wrong_magic_number(copy_dir, capsys):
    content = bytearray(_raw(TEST_LABELS))
    content[3] = 0x03  # 0x00000803: the images magic in a labels file
    path = _replace_raw(copy_dir, TEST_LABELS, bytes(content))
    _fails(copy_dir, capsys, str(path), "magic number 0x00000803, expected 0x00000801 (labels)")


def test_labels_and_images_of_different_counts(copy_dir, capsys):
    content = bytearray(_raw(TEST_LABELS))
    content[4:8] = (9_999).to_bytes(4, "big")  # a consistent file with one label fewer
    path = _replace_raw(copy_dir, TEST_LABELS, bytes(content[:-1]))
    _fails(copy_dir, capsys, "test set has 10,000 images", "but 9,999 labels", str(path))


def test_missing_file_in_data_dir(copy_dir, capsys):
    (copy_dir / f"{TEST_LABELS}.gz").unlink()
    _fails(copy_dir, capsys, str(copy_dir), f"lacks {TEST_LABELS}", "drop --data-dir")


def test_data_dir_that_does_not_exist(tmp_path, capsys):
    code = main(["data", "verify", "--data-dir", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1
    assert f"--data-dir {tmp_path / 'nope'} is not a folder" in err


def test_debug_shows_the_exception(copy_dir):
    (copy_dir / f"{TRAIN_LABELS}.gz").write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DataError, match="is truncated: its gzip stream ends early"):
        main(["--debug", "data", "verify", "--data-dir", str(copy_dir)])


def test_bad_file_in_cache_says_delete_and_rerun(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    cache = fashion_mnist.cache_dir()
    assert cache.is_relative_to(tmp_path)
    cache.mkdir(parents=True)
    for name in fashion_mnist.FILES.values():
        shutil.copyfile(fashion_mnist.DEBIAN_DIR / f"{name}.gz", cache / f"{name}.gz")
    (cache / f"{TEST_LABELS}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01"))
    with pytest.raises(DataError, match=r"delete .* and rerun: hpstudy downloads a verified copy"):
        sources.load()


def test_no_files_and_no_download_lists_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(DataError) as info:
        sources.load(download=False)
    message = str(info.value)
    assert "--data-dir DIR or set HPSTUDY_DATA_DIR" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert f"download them into {tmp_path / 'cache'}" in message
    assert not (tmp_path / "cache").exists()  # looking never creates the cache
