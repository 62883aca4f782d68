"""Files that appear whole or not at all: write under a temporary name beside, then rename.

    >>> with atomic_file("runs/paper/report.html", "w") as f:
    ...     f.write(html)

A crash, a kill or an exception inside the block leaves the old file (or none) and no partial
one: the temporary file is removed, and `os.replace` within one folder is atomic. Temporary names
start with "." and end with `PART_SUFFIX`, so a later run can recognise leftovers of a killed one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PART_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; rename it over `path` on success.

    `mode` is "wb" or "w" (UTF-8). `fsync=True` forces the bytes to disk before the rename, for
    files whose loss after a power cut would go unnoticed. The handle's `.name` is the temporary
    path, for checks that read the file back before it replaces `path`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes with mode 'w' or 'wb', got mode={mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name opened exclusively: the file gets the umask's usual permissions (mkstemp
    # would make it private) and no concurrent writer can share it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}")
    try:
        with open(tmp, mode.replace("w", "x"), encoding=None if "b" in mode else "utf-8") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when something failed


def save_torch_atomic(obj: object, path: str | os.PathLike, *, fsync: bool = False,
                      verify: bool = False) -> Path:  # fmt: skip
    """`torch.save(obj)` as a file that appears whole or not at all; returns its path.

    The bytes are made in memory and then written: a disk that fills (or a file size limit) then
    raises Python's OSError with its errno, naming `path` (the CLI prints it as one line), where
    torch writing the file itself raises a RuntimeError ("unexpected pos"). `verify=True` loads
    the temporary file with `weights_only=True` before the rename.
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        with atomic_file(path, fsync=fsync) as f:
            f.write(buffer.getbuffer())
            if verify:
                f.flush()
                torch.load(f.name, map_location="cpu", weights_only=True)
    except OSError as exc:
        # The temporary file is gone; name the file the caller asked for, not it.
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    return Path(path)
