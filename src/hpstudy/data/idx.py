"""FashionMNIST, provably canonical: find, verify and decode the four IDX files.

    >>> from hpstudy.data import sources
    >>> ds = sources.load()              # finds (or downloads), verifies and decodes the files
    >>> ds.train_images.shape, ds.test_labels.shape
    ((60000, 28, 28), (10000,))

Where the files come from, in order: `data_dir` (the CLI's `--data-dir`) or `$HPSTUDY_DATA_DIR`;
the user cache (`<XDG cache>/hpstudy/fashion-mnist`); Debian's `/usr/share/datasets/fashion-mnist`
(package `dataset-fashion-mnist`); otherwise a download from the official mirrors into the cache
(`hpstudy.data.download`, through `hpstudy.data.sources`). Each file may be gzip-compressed
(`.gz`) or not; the SHA-256 of the decompressed bytes must match the canonical digest.

Every way a file can be wrong (unreadable, truncated, a damaged gzip stream, a wrong magic number,
images and labels of different counts, a wrong digest) raises `DataError` with one line that names
the file, what is wrong and how to fix it where the file lives. Reading is bounded by the IDX
header: a FIFO or device is refused unopened, a header declaring more items than FashionMNIST has
is refused before its data, and a file is read (or inflated) only to one byte past what its header
declares, so a gzip bomb or a 10 GB sparse file costs kilobytes, not a MemoryError.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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

# Training-set pixel statistics on [0, 1] (population std, ddof=0).
PIXEL_MEAN = 0.2860405969887955
PIXEL_STD = 0.35302424451492237

N_TRAIN, N_TEST, N_ROWS, N_COLS = 60_000, 10_000, 28, 28
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
IMAGES_MAGIC, LABELS_MAGIC = _IMAGES_MAGIC, _LABELS_MAGIC  # for other IDX readers
_GZIP_MAGIC = b"\x1f\x8b"
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


def find_file(folder: Path, name: str) -> Path | None:
    """`name` or `name.gz` inside `folder`, whichever exists (uncompressed first).

    Anything there but a folder counts, so that reading names a FIFO or a device as such instead
    of calling the file missing.
    """
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists() and not candidate.is_dir():
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
        missing = [n for n in FILES.values() if find_file(folders[0], n) is None]
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


def gunzip(raw: bytes, limit: int) -> bytes:
    """`raw` decompressed if it is gzip (detected by its magic bytes), else `raw` itself.

    Inflates in bounded steps and stops one byte past `limit`: a caller that gets more than
    `limit` bytes back has a gzip bomb (or junk) and never held more than that in memory.
    Raises EOFError for a truncated stream and OSError/zlib.error for a damaged one.
    """
    if raw[:2] != _GZIP_MAGIC:
        return raw
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
        return stream.read(limit + 1)


def idx_size(name: str) -> int:
    """The size in bytes of the canonical file `name` (decompressed): header plus data."""
    n_items = N_TRAIN if name.startswith("train") else N_TEST
    is_images = "idx3" in name
    return 16 + n_items * N_ROWS * N_COLS if is_images else 8 + n_items


def open_regular(path: Path, fix: str) -> BinaryIO:
    """`path` opened for reading, if it is a regular file; DataError otherwise.

    A FIFO or a device is refused without a blocking open: O_NONBLOCK makes the open return at
    once, and fstat on the open file then says what it is (no race with a rename in between).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}; {fix}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device, socket or folder"
        raise DataError(f"{path} is not a regular file ({kind}) and was not read; {fix}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(
    path: Path,
    *,
    magic: int | None = None,
    max_count: int = N_TRAIN,
    fix: str | None = None,
    shape: tuple[int, int] | None = (N_ROWS, N_COLS),
    max_bytes: int | None = None,
) -> bytes:
    """The decompressed content of the IDX file `path`, read no further than its header says.

    The header is read first and checked (`magic`, if given, else either FashionMNIST magic;
    images of `shape` (None: any size, for a user's own files); at most `max_count` items and
    `max_bytes` data bytes); then the size on disk must fit what it declares, and gzip is inflated
    only to one byte past it. So a gzip bomb, a header that declares 2^31 images or a 10 GB sparse
    file is refused having read a few kilobytes. `fix` ends each message (default: how to
    replace the file where it lives).
    """
    fix = _fix(path) if fix is None else fix
    with open_regular(path, fix) as raw:
        size = os.fstat(raw.fileno()).st_size
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw) if compressed else contextlib.nullcontext(raw) as f:
                head = f.read(4)
                header_len = _header_len(head, path, magic, fix)
                header = head + f.read(header_len - len(head))
                if len(header) < header_len:
                    raise DataError(f"{path} is truncated inside its IDX header; {fix}")
                expected = header_len + _declared(header, path, max_count, fix, shape, max_bytes)
                _check_size_on_disk(size, expected, compressed, path, fix)
                content = header + f.read(expected + 1 - len(header))
        except EOFError as exc:
            raise DataError(
                f"{path} is truncated: its gzip stream ends early ({size:,} bytes on disk); {fix}"
            ) from exc
        except (OSError, zlib.error) as exc:
            if not compressed:
                raise DataError(f"cannot read {path}: {exc}; {fix}") from exc
            raise DataError(f"{path} is a damaged gzip file ({exc}); {fix}") from exc
    if len(content) > expected:
        raise DataError(
            f"{path} inflates past the {expected:,} bytes its IDX header declares (a gzip bomb, "
            f"damaged data or data appended) and was not read further; {fix}"
        )
    return content


def _header_len(head: bytes, path: Path, magic: int | None, fix: str) -> int:
    """The IDX header length that the magic number `head` announces; DataError if it is wrong."""
    if len(head) < 4:
        raise DataError(
            f"{path} is truncated: {len(head)} bytes, too short for an IDX header; {fix}"
        )
    found = int.from_bytes(head, "big")
    expected = magic if magic is not None else found
    if found != expected or found not in (_IMAGES_MAGIC, _LABELS_MAGIC):
        kind = "images" if expected == _IMAGES_MAGIC else "labels"
        want = f"0x{expected:08x} ({kind})" if magic is not None else "0x00000803 or 0x00000801"
        what = {_IMAGES_MAGIC: "an IDX image", _LABELS_MAGIC: "an IDX label"}.get(magic, "an IDX")
        raise DataError(
            f"{path} has IDX magic number 0x{found:08x}, expected {want}: it is not {what} file; "
            f"{fix}"
        )
    return 4 + 4 * (found & 0xFF)


def _dims(header: bytes) -> list[int]:
    return [int.from_bytes(header[i : i + 4], "big") for i in range(4, len(header), 4)]


def _declared(
    header: bytes,
    path: Path,
    max_count: int,
    fix: str,
    shape: tuple[int, int] | None = (N_ROWS, N_COLS),
    max_bytes: int | None = None,
) -> int:
    """The number of data bytes that a complete `header` declares, within `max_count` items of
    `shape` (None: any) and `max_bytes` bytes (None: no limit beyond the count)."""
    dims = _dims(header)
    if shape is not None and len(dims) == 3 and tuple(dims[1:]) != shape:
        raise DataError(
            f"{path} holds {dims[1]}x{dims[2]} images, expected {shape[0]}x{shape[1]}; {fix}"
        )
    if dims[0] > max_count:
        kind = "images" if len(dims) == 3 else "labels"
        raise DataError(
            f"{path}: its IDX header declares {dims[0]:,} {kind}, expected at most "
            f"{max_count:,}; it was refused before reading them; {fix}"
        )
    if max_bytes is not None and math.prod(dims) > max_bytes:
        raise DataError(
            f"{path}: its IDX header declares {' x '.join(f'{d:,}' for d in dims)} values, more "
            f"than the {max_bytes:,} bytes hpstudy reads; it was refused before reading them; {fix}"
        )
    return math.prod(dims)


def _check_size_on_disk(size: int, expected: int, compressed: bool, path: Path, fix: str) -> None:
    """Refuse a file larger on disk than the content its header declares could make it."""
    if not compressed and size > expected:
        raise DataError(
            f"{path} is {size:,} bytes on disk, but its IDX header declares {expected:,}: it has "
            f"{size - expected:,} bytes of trailing garbage after its data; {fix}"
        )
    if compressed and size > expected + _gzip_slack(expected):
        raise DataError(
            f"{path} is {size:,} bytes on disk, more than any gzip of the {expected:,} bytes its "
            f"IDX header declares could be: it holds something else; {fix}"
        )


def _gzip_slack(n_bytes: int) -> int:
    """Deflate grows incompressible data by well under 1 %; gzip adds a header of a few bytes."""
    return n_bytes // 100 + 2**16


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


def decode_idx(
    content: bytes,
    path: Path,
    *,
    magic: int,
    count: int | None = None,
    fix: str | None = None,
    shape: tuple[int, int] | None = (N_ROWS, N_COLS),
) -> np.ndarray:
    """Decode an IDX file of unsigned bytes after checking its magic number, shape and length.

    `count`, if given, is the number of items the file must hold; `load` leaves it out so that it
    can first compare images with labels and name that mismatch as such. `shape` is the image
    size required (None: any).
    """
    fix = _fix(path) if fix is None else fix
    header_len = _header_len(content[:4], path, magic, fix)
    if len(content) < header_len:
        raise DataError(f"{path} is truncated inside its IDX header; {fix}")
    dims = _dims(content[:header_len])
    n_values = _declared(content[:header_len], path, max(dims[0], count or 0), fix, shape)
    if count is not None and dims[0] != count:
        kind = "images" if magic == _IMAGES_MAGIC else "labels"
        raise DataError(f"{path} holds {dims[0]:,} {kind}, expected {count:,}; {fix}")
    n_data = len(content) - header_len
    if n_data < n_values:
        shape = f" ({' x '.join(f'{d:,}' for d in dims)})" if len(dims) > 1 else ""
        raise DataError(
            f"{path} is truncated: {n_data:,} data bytes after its IDX header, expected "
            f"{n_values:,}{shape}; {fix}"
        )
    if n_data > n_values:
        raise DataError(
            f"{path} has {n_data - n_values:,} bytes of trailing garbage after its "
            f"{n_values:,} data bytes; {fix}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_len).reshape(dims)


def load_folder(folder: Path) -> FashionMNIST:
    """Verify (SHA-256) and decode the four files in `folder`."""
    paths, contents, arrays = {}, {}, {}
    for role, name in FILES.items():
        path = find_file(folder, name)
        if path is None:  # deleted between locate and now
            raise DataError(f"{folder / name} disappeared while loading; rerun")
        paths[role] = path
        magic = _IMAGES_MAGIC if role.endswith("images") else _LABELS_MAGIC
        max_count = N_TRAIN if role.startswith("train") else N_TEST
        contents[role] = read_bytes(path, magic=magic, max_count=max_count)
        arrays[role] = decode_idx(contents[role], path, magic=magic)
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
    val = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx
