"""Where a named IDX dataset's files come from: the folder given, the usual places, else a download.

    >>> from hpstudy.data import catalog, sources
    >>> fm = sources.load()                             # FashionMNIST, verified
    >>> arrays, digests, folder = sources.load_idx(catalog.SOURCES["mnist"])

This module sits above the readers (`fashion_mnist`, `catalog`, both on `idx`) and the downloader
(`download`), so none of them needs another: the readers find and decode files in a folder, the
downloader fills the cache, and only here does "not found" turn into "download it".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hpstudy.data import catalog, fashion_mnist
from hpstudy.data import download as downloader  # `download` is a keyword argument here
from hpstudy.errors import DataError

Progress = Callable[[str], None] | None


def locate(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, progress: Progress = None
) -> Path:
    """The folder holding the four FashionMNIST files; downloads into the cache when none has
    them. `progress`, if given, receives one line per download step (the library never prints)."""
    folder = fashion_mnist.find_folder(data_dir)
    if folder is not None:
        return folder
    if not download:
        raise fashion_mnist.not_found()
    return downloader.fetch_all(fashion_mnist.cache_dir(), progress=progress)


def load(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, progress: Progress = None
) -> fashion_mnist.FashionMNIST:
    """FashionMNIST located, verified (SHA-256) and decoded."""
    return fashion_mnist.load_folder(locate(data_dir, download=download, progress=progress))


def locate_source(
    source: catalog.Source,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: Progress = None,
) -> Path:
    """The folder holding `source`'s four files: `data_dir`, else the cache, else a download."""
    folder = catalog.find_folder(source, data_dir)
    if folder is not None:
        return folder
    if not download:
        raise DataError(
            f"{source.title} not found in {source.cache_dir()}; {source.how_to_provide()}"
        )
    return downloader.fetch_all(source.cache_dir(), source=source, progress=progress)


def load_idx(
    source: catalog.Source,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: Progress = None,
) -> tuple[dict[str, np.ndarray], dict[str, str], Path]:
    """(role -> array, file -> SHA-256, folder): the four files located, verified and decoded."""
    folder = locate_source(source, data_dir, download=download, progress=progress)
    arrays, digests = catalog.load_folder(source, folder)
    return arrays, digests, folder
