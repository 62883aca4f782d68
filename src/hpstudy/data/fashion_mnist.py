"""FashionMNIST, provably canonical: its four files found, verified (SHA-256) and decoded.

    >>> from hpstudy.data import fashion_mnist, sources
    >>> ds = sources.load()              # finds (or downloads), verifies and decodes the files
    >>> ds.train_images.shape, ds.test_labels.shape
    ((60000, 28, 28), (10000,))
    >>> fashion_mnist.CLASS_NAMES[0], fashion_mnist.FILES["test_labels"]
    ('T-shirt/top', 't10k-labels-idx1-ubyte')

Where the files come from, in order: `data_dir` (the CLI's `--data-dir`) or `$HPSTUDY_DATA_DIR`;
the user cache (`<XDG cache>/hpstudy/fashion-mnist`); Debian's `/usr/share/datasets/fashion-mnist`
(package `dataset-fashion-mnist`); otherwise a download from the official mirrors into the cache
(`hpstudy.data.download`, through `hpstudy.data.sources`). Each file may be gzip-compressed
(`.gz`) or not; the SHA-256 of the decompressed bytes must match the canonical digest.

The bytes are read by `hpstudy.data.idx`, bounded by each file's header, within FashionMNIST's
sizes (at most 60,000 images of 28 x 28); what is FashionMNIST's own lives here: the file names,
digests, classes and pixel statistics, the folders searched, that images and labels match one
to one in the published counts, and the fix each message ends with, which depends on where the
file lives (delete a cached copy, reinstall Debian's, replace the user's). MNIST and KMNIST share
the file names, sizes and layout (`hpstudy.data.catalog`). Every way a file can be wrong raises
`DataError` with one line that names the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from hpstudy.data import idx
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

# Training-set pixel statistics on [0, 1] (population std, ddof=0).
PIXEL_MEAN = 0.2860405969887955
PIXEL_STD = 0.35302424451492237

N_TRAIN, N_TEST, N_ROWS, N_COLS = 60_000, 10_000, 28, 28
SHAPE = (N_ROWS, N_COLS)  # one image
ENV_VAR = "HPSTUDY_DATA_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def cache_dir() -> Path:
    """The user cache folder that downloads go to (honours `$XDG_CACHE_HOME`)."""
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
        "`apt-get install dataset-fashion-mnist`; (3) allow network access to the official "
        "mirrors (or set HPSTUDY_MIRRORS to your own) so hpstudy can download them into "
        f"{cache_dir()}"
    )


def _fix(path: Path, what: str = "it") -> str:
    """What to do about a bad file (`what` names it in the sentence), by where it lives."""
    folder = path.parent
    if folder == cache_dir():
        return f"delete {path} and rerun: hpstudy downloads a verified copy"
    if folder == DEBIAN_DIR:
        return f"reinstall {what}: `apt-get install --reinstall dataset-fashion-mnist`"
    return (
        f"replace {what} with the canonical file, or drop --data-dir/{ENV_VAR} to use the cache "
        "or Debian's copy"
    )


def _has_all(folder: Path) -> bool:
    return all(idx.find_file(folder, name) is not None for name in FILES.values())


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order of precedence."""
    explicit = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    if explicit:
        return [Path(explicit)]
    return [cache_dir(), DEBIAN_DIR]


def find_folder(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder holding all four files, or None when no usual place has them (then
    `hpstudy.data.sources.locate` downloads them). An explicit folder (`data_dir` or
    `$HPSTUDY_DATA_DIR`) is a promise: it is never replaced by another copy."""
    folders = candidate_dirs(data_dir)
    for folder in folders:
        if _has_all(folder):
            return folder
    if data_dir is not None or os.environ.get(ENV_VAR):
        origin = "--data-dir" if data_dir is not None else ENV_VAR
        if not folders[0].is_dir():
            raise DataError(
                f"{origin} {folders[0]} is not a folder; point it at the folder holding the four "
                f"FashionMNIST files, or drop {origin} to use the cache or Debian's copy"
            )
        missing = [n for n in FILES.values() if idx.find_file(folders[0], n) is None]
        raise DataError(
            f"{folders[0]} (from {origin}) lacks {', '.join(missing)} (or their .gz); put the "
            f"four FashionMNIST files there, or drop {origin} to use the cache or Debian's copy"
        )
    return None


def not_found() -> DataError:
    """The error for a machine with no copy where no download is allowed."""
    folders = candidate_dirs()
    return DataError(
        f"FashionMNIST not found in {' or '.join(map(str, folders))}; {how_to_provide()}"
    )


def idx_size(name: str) -> int:
    """The size in bytes of the canonical file `name` (decompressed): header plus data."""
    n_items = N_TRAIN if name.startswith("train") else N_TEST
    is_images = "idx3" in name
    return 16 + n_items * N_ROWS * N_COLS if is_images else 8 + n_items


def verify_digest(name: str, content: bytes, path: Path) -> str:
    """The SHA-256 of `content`, which must be the canonical digest of `name`."""
    actual = hashlib.sha256(content).hexdigest()
    expected = SHA256[name]
    if actual != expected:
        raise DataError(
            f"{path} is not the canonical {name}: SHA-256 {actual}, expected {expected}; "
            f"{_fix(path)}"
        )
    return actual


def read_canonical(path: Path, name: str) -> bytes:
    """The decompressed content of `path`, which must be the canonical file `name`: read within
    FashionMNIST's bounds (either magic number, at most 60,000 items of 28 x 28), then checked
    against its SHA-256. For a file taken on its own (the download cache, torchvision's copy);
    `load_folder` reads the four as a set."""
    content = idx.read_bytes(path, max_count=N_TRAIN, fix=_fix(path), shape=SHAPE)
    verify_digest(name, content, path)
    return content


def load_folder(folder: Path) -> FashionMNIST:
    """Verify (SHA-256) and decode the four files in `folder`."""
    paths, contents, arrays = {}, {}, {}
    for role, name in FILES.items():
        path = idx.find_file(folder, name)
        if path is None:  # deleted between locate and now
            raise DataError(f"{folder / name} disappeared while loading; rerun")
        paths[role] = path
        magic = idx.IMAGES_MAGIC if role.endswith("images") else idx.LABELS_MAGIC
        max_count = N_TRAIN if role.startswith("train") else N_TEST
        fix = _fix(path)
        contents[role] = idx.read_bytes(
            path, magic=magic, max_count=max_count, fix=fix, shape=SHAPE
        )
        arrays[role] = idx.decode_idx(contents[role], path, magic=magic, fix=fix, shape=SHAPE)
    # Structure first, so that a mismatch or a wrong count is named as such, then the digests.
    for split, expected in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels = f"{split}_images", f"{split}_labels"
        n_images, n_labels = len(arrays[images]), len(arrays[labels])
        if n_images != n_labels:
            raise DataError(
                f"{split} set has {n_images:,} images ({paths[images]}) but {n_labels:,} labels "
                f"({paths[labels]}): they must match one to one; "
                f"{_fix(paths[labels], 'the damaged one')}"
            )
        if n_images != expected:
            raise DataError(
                f"{split} set has {n_images:,} images and labels, expected {expected:,} "
                f"({paths[images]}, {paths[labels]}); {_fix(paths[images], 'both')}"
            )
    digests = {
        name: verify_digest(name, contents[role], paths[role]) for role, name in FILES.items()
    }
    return FashionMNIST(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
        digests=digests,
        source=folder,
    )
