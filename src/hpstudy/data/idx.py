"""Bounded IDX reading: a file's header is checked before its data, and gzip inflates no further.

    >>> from hpstudy.data import idx
    >>> path = idx.find_file(folder, "t10k-labels-idx1-ubyte")      # the file, or its .gz
    >>> content = idx.read_bytes(path, magic=idx.LABELS_MAGIC, max_count=10_000, shape=None,
    ...                          fix="replace it with the published file")
    >>> idx.decode_idx(content, path, magic=idx.LABELS_MAGIC, shape=None, fix="...").shape
    (10000,)

IDX is the format of the MNIST family (`hpstudy.data.fashion_mnist`, `catalog`'s MNIST and
KMNIST), of a user's own data folder (`userdata`) and of images to classify
(`hpstudy.predict.classify`): a magic number, the size of each axis, then unsigned bytes. This
module knows the format and no dataset: each caller says which magic number it expects, how many
items and what image shape it allows, and what to do about a bad file (`fix`, which ends every
message). Every way a file can be wrong (unreadable, truncated, a damaged gzip stream, a wrong
magic number, a wrong shape or length) raises `DataError` with one line.

Reading is bounded by the IDX header: a FIFO or device is refused unopened, a header declaring
more items (or bytes) than the caller allows is refused before its data, and a file is read (or
inflated) only to one byte past what its header declares, so a gzip bomb or a 10 GB sparse file
costs kilobytes, not a MemoryError.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import stat
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hpstudy.errors import DataError

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 and 1 dimensions
_GZIP_MAGIC = b"\x1f\x8b"


def find_file(folder: Path, name: str) -> Path | None:
    """`name` or `name.gz` inside `folder`, whichever exists (uncompressed first).

    Anything there but a folder counts, so that reading names a FIFO or a device as such instead
    of calling the file missing.
    """
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


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
    max_count: int,
    fix: str,
    shape: tuple[int, int] | None,
    max_bytes: int | None = None,
) -> bytes:
    """The decompressed content of the IDX file `path`, read no further than its header says.

    The header is read first and checked (`magic`, if given, else either IDX magic of unsigned
    bytes; images of `shape` (None: any size, for a user's own files); at most `max_count` items
    and `max_bytes` data bytes); then the size on disk must fit what it declares, and gzip is
    inflated only to one byte past it. So a gzip bomb, a header that declares 2^31 images or a
    10 GB sparse file is refused having read a few kilobytes. `fix` ends each message.
    """
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
    if found != expected or found not in (IMAGES_MAGIC, LABELS_MAGIC):
        kind = "images" if expected == IMAGES_MAGIC else "labels"
        want = f"0x{expected:08x} ({kind})" if magic is not None else "0x00000803 or 0x00000801"
        what = {IMAGES_MAGIC: "an IDX image", LABELS_MAGIC: "an IDX label"}.get(magic, "an IDX")
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
    shape: tuple[int, int] | None,
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


def decode_idx(
    content: bytes,
    path: Path,
    *,
    magic: int,
    count: int | None = None,
    fix: str,
    shape: tuple[int, int] | None,
) -> np.ndarray:
    """Decode an IDX file of unsigned bytes after checking its magic number, shape and length.

    `count`, if given, is the number of items the file must hold; a loader of image and label
    files may leave it out so that it can first compare images with labels and name that
    mismatch as such. `shape` is the image size required (None: any).
    """
    header_len = _header_len(content[:4], path, magic, fix)
    if len(content) < header_len:
        raise DataError(f"{path} is truncated inside its IDX header; {fix}")
    dims = _dims(content[:header_len])
    n_values = _declared(content[:header_len], path, max(dims[0], count or 0), fix, shape)
    if count is not None and dims[0] != count:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
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
