"""FashionMNIST, provably canonical: locate, verify and decode the four IDX files.

    >>> from hpstudy import data
    >>> ds = data.load()                 # finds, verifies and decodes the files
    >>> ds.train_images.shape, ds.test_labels.shape
    ((60000, 28, 28), (10000,))

Where the files come from, in order: `data_dir` (the CLI's `--data-dir`) or `$HPSTUDY_DATA_DIR`;
the user cache (`<XDG cache>/hpstudy/fashion-mnist`); Debian's `/usr/share/datasets/fashion-mnist`
(package `dataset-fashion-mnist`); otherwise a download from the official mirrors into the cache
(`hpstudy.download`). Each file may be gzip-compressed (`.gz`) or not; the SHA-256 of the
decompressed bytes must match the canonical digest.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from hpstudy.errors import DataError

# Role -> canonical file name (without .gz).
FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 of the decompressed canonical files.
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Training-set pixel statistics on [0, 1].
PIXEL_MEAN = 0.2860405969887955
PIXEL_STD = 0.35302424451492237

N_TRAIN, N_TEST, N_ROWS, N_COLS = 60_000, 10_000, 28, 28
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
ENV_VAR = "HPSTUDY_DATA_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def cache_dir() -> Path:
    """The user cache folder that downloads go to."""
    return Path(platformdirs.user_cache_dir("hpstudy")) / "fashion-mnist"


@dataclass(frozen=True)
class FashionMNIST:
    """The decoded dataset: uint8 images (N, 28, 28) and int64 labels (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    digests: dict[str, str]  # canonical file name -> SHA-256 of its decompressed bytes
    source: Path  # the folder the files were read from


def how_to_provide() -> str:
    return (
        "provide the data in one of three ways: (1) pass --data-dir DIR or set "
        f"{ENV_VAR}=DIR to a folder holding the four files; (2) on Debian, "
        "`apt-get install dataset-fashion-mnist`; (3) allow network access so hpstudy can "
        f"download them into {cache_dir()}"
    )


def find_file(folder: Path, name: str) -> Path | None:
    """`name` or `name.gz` inside `folder`, whichever exists (uncompressed first)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_all(folder: Path) -> bool:
    return all(find_file(folder, name) is not None for name in FILES.values())


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order of precedence."""
    explicit = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    if explicit:
        return [Path(explicit)]
    return [cache_dir(), DEBIAN_DIR]


def locate(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The folder holding all four files; downloads into the cache when none has them."""
    folders = candidate_dirs(data_dir)
    for folder in folders:
        if _has_all(folder):
            return folder
    if data_dir is not None or os.environ.get(ENV_VAR):
        missing = [n for n in FILES.values() if find_file(folders[0], n) is None]
        raise DataError(
            f"{folders[0]} lacks {', '.join(missing)} (or their .gz); put the four FashionMNIST "
            f"files there, or drop --data-dir/{ENV_VAR} to use the cache or Debian's copy"
        )
    if not download:
        raise DataError(f"FashionMNIST not found in {', '.join(map(str, folders))}; " + how_to_provide())
    from hpstudy import download as _download  # noqa: PLC0415 - only needed on a cold machine

    return _download.fetch_all(cache_dir())


def read_bytes(path: Path) -> bytes:
    """The decompressed content of `path` (gzip is detected by its magic bytes)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path} is a damaged gzip file ({exc}); delete it and let hpstudy fetch a fresh "
            "copy, or reinstall dataset-fashion-mnist"
        ) from exc


def verify_digest(name: str, content: bytes, path: Path) -> str:
    actual = hashlib.sha256(content).hexdigest()
    expected = SHA256[name]
    if actual != expected:
        raise DataError(
            f"{path} is not the canonical {name}: SHA-256 {actual}, expected {expected}; "
            "delete it and let hpstudy fetch a fresh copy, or reinstall dataset-fashion-mnist"
        )
    return actual


def decode_idx(content: bytes, path: Path, *, magic: int, count: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes after checking its magic number, count and shape."""
    if len(content) < 8:
        raise DataError(f"{path} is truncated: {len(content)} bytes, too short for an IDX header")
    found_magic = int.from_bytes(content[:4], "big")
    if found_magic != magic:
        raise DataError(
            f"{path} has IDX magic number 0x{found_magic:08x}, expected 0x{magic:08x}: "
            "it is not the expected FashionMNIST file"
        )
    n_dims = magic & 0xFF
    header_len = 4 + 4 * n_dims
    if len(content) < header_len:
        raise DataError(f"{path} is truncated inside its IDX header")
    dims = [int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims)]
    expected_dims = [count] + ([N_ROWS, N_COLS] if n_dims == 3 else [])
    if dims != expected_dims:
        raise DataError(f"{path} has shape {dims}, expected {expected_dims}")
    n_values = int(np.prod(dims))
    if len(content) - header_len != n_values:
        raise DataError(
            f"{path} is truncated or padded: {len(content) - header_len} data bytes, "
            f"expected {n_values}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_len).reshape(dims)


def load(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> FashionMNIST:
    """Locate, verify (SHA-256) and decode the four files."""
    folder = locate(data_dir, download=download)
    arrays, digests = {}, {}
    for role, name in FILES.items():
        path = find_file(folder, name)
        content = read_bytes(path)
        is_images = role.endswith("images")
        count = N_TRAIN if role.startswith("train") else N_TEST
        # Structure first, so a wrong magic number or count is named as such, then the digest.
        arrays[role] = decode_idx(
            content, path, magic=_IMAGES_MAGIC if is_images else _LABELS_MAGIC, count=count
        )
        digests[name] = verify_digest(name, content, path)
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise DataError(f"{split} set has {n_images} images but {n_labels} labels")
    labels = {k: arrays[k].astype(np.int64) for k in ("train_labels", "test_labels")}
    return FashionMNIST(
        train_images=arrays["train_images"],
        train_labels=labels["train_labels"],
        test_images=arrays["test_images"],
        test_labels=labels["test_labels"],
        digests=digests,
        source=folder,
    )


def stratified_split(labels: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): a seeded split with each class in proportion in the validation part."""
    if not 0 < n_val < len(labels):
        raise DataError(f"validation size must be between 1 and {len(labels) - 1}, got {n_val}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder allocation so the per-class quotas sum to n_val exactly.
    exact = counts * n_val / len(labels)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(quota - exact)[: n_val - quota.sum()]] += 1
    val = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota, strict=True)]
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx
