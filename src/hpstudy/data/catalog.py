"""The canonical IDX datasets hpstudy can fetch by name: files, digests, mirrors, cache folders.

    >>> from hpstudy.data import catalog, sources
    >>> arrays, digests, folder = sources.load_idx(catalog.SOURCES["mnist"])
    >>> arrays["train_images"].shape
    (60000, 28, 28)

FashionMNIST is listed here for its name and class names only: it is loaded by
`hpstudy.data.fashion_mnist`, unchanged; `hpstudy.data.sources` locates (or downloads) and loads
both kinds. MNIST and KMNIST share its file names, sizes and IDX layout (`fashion_mnist.FILES`,
`N_TRAIN`, `N_TEST`, `SHAPE`), so they are read with `idx.read_bytes`/`idx.decode_idx` within
those bounds and downloaded by `hpstudy.data.download` with the same timeouts, retries, total
limit, lock and atomic writes. Where they are looked for, in order: `data_dir` (the CLI's
`--data-dir`), the user cache (`<XDG cache>/hpstudy/<name>`), else a download into it. No Debian
package ships them (`apt-cache search mnist` finds only dataset-fashion-mnist).

Their digests: the SHA-256 of the decompressed files is published nowhere we could find, so
hpstudy verifies the SHA-256 of each `.gz` exactly as the official mirrors serve it (published
by torchvision's Ruby port, tensorflow-datasets-style checksum tables and several projects that
commit the files, all agreeing), keeps that `.gz` as it came, and records the decompressed
digest beside it. An uncompressed copy cannot be checked and is refused with what to do.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import platformdirs

from hpstudy.data import fashion_mnist, idx
from hpstudy.errors import DataError


@dataclass(frozen=True)
class Source:
    """One canonical set of the four IDX files and how each file is verified."""

    name: str  # the slug a study file names it by, and its cache folder
    title: str  # how messages name it
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...]  # official base URLs, tried in order
    mirrors_env: str  # the variable that replaces `mirrors` (comma-separated)
    sha256: Mapping[str, str] = field(default_factory=dict)  # file -> digest, decompressed
    gz_sha256: Mapping[str, str] = field(default_factory=dict)  # file -> digest of name.gz

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(fashion_mnist.FILES.values())

    @property
    def keeps_gz(self) -> bool:
        """Whether the cache keeps each file as the published .gz (its digest is of that)."""
        return not self.sha256

    def cache_dir(self) -> Path:
        return Path(platformdirs.user_cache_dir("hpstudy")) / self.name

    def how_to_provide(self) -> str:
        return (
            f"provide the data in one of two ways: (1) pass --data-dir DIR for a folder holding "
            f"the four {self.title} .gz files as published; (2) allow network access to the "
            f"official mirrors (or set {self.mirrors_env} to your own) so hpstudy can download "
            f"them into {self.cache_dir()}"
        )

    def fix(self, path: Path) -> str:
        if path.parent == self.cache_dir():
            return f"delete {path} and rerun: hpstudy downloads a verified copy"
        return (
            f"replace it with the official {self.title} file ({path.name.removesuffix('.gz')}.gz)"
        )

    def mismatch(self, name: str, raw: bytes, content: bytes) -> str | None:
        """Why `raw` (the file as stored) or `content` (decompressed) is not canonical, or None."""
        if name in self.sha256:
            actual = hashlib.sha256(content).hexdigest()
            if actual != self.sha256[name]:
                return f"SHA-256 {actual} of the decompressed bytes, expected {self.sha256[name]}"
            return None
        if raw[:2] != b"\x1f\x8b":
            return (
                f"it is not gzip-compressed, and only the SHA-256 of the published {name}.gz is "
                f"known for {self.title}"
            )
        actual = hashlib.sha256(raw).hexdigest()
        if actual != self.gz_sha256[name]:
            return f"SHA-256 {actual} of the .gz, expected {self.gz_sha256[name]}"
        return None


# The official mirrors and the SHA-256 of each .gz as they serve it. Sizes of the .gz files:
# MNIST 9,912,422 / 28,881 / 1,648,877 / 4,542 bytes; KMNIST 18,165,135 / 29,497 / 3,041,136 /
# 5,120 bytes (train images, train labels, test images, test labels).
MNIST = Source(
    name="mnist",
    title="MNIST",
    class_names=tuple(str(digit) for digit in range(10)),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's first mirror
        "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's
        "http://yann.lecun.com/exdb/mnist/",  # the original; often refuses scripted clients
    ),
    mirrors_env="HPSTUDY_MNIST_MIRRORS",
    gz_sha256={
        "train-images-idx3-ubyte": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
)
KMNIST = Source(
    name="kmnist",
    title="Kuzushiji-MNIST",
    class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    # CODH serves both; plain http is torchvision's choice and the fallback when TLS fails.
    mirrors=(
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    mirrors_env="HPSTUDY_KMNIST_MIRRORS",
    gz_sha256={
        "train-images-idx3-ubyte": (
            "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"
        ),
        "train-labels-idx1-ubyte": (
            "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"
        ),
        "t10k-images-idx3-ubyte": (
            "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"
        ),
        "t10k-labels-idx1-ubyte": (
            "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"
        ),
    },
)
SOURCES: dict[str, Source] = {"mnist": MNIST, "kmnist": KMNIST}


def read_verified(source: Source, path: Path, name: str) -> tuple[bytes, dict[str, str]]:
    """The decompressed content of `path` (the file `name`), checked against `source`'s digest,
    and the digests it was checked by: `name` (decompressed) and `name.gz` where that is the
    published one."""
    fix = source.fix(path)
    magic = idx.IMAGES_MAGIC if "idx3" in name else idx.LABELS_MAGIC
    max_count = fashion_mnist.N_TRAIN if name.startswith("train") else fashion_mnist.N_TEST
    content = idx.read_bytes(
        path, magic=magic, max_count=max_count, fix=fix, shape=fashion_mnist.SHAPE
    )
    # read_bytes has bounded the size on disk by what the header declares: hashing is bounded.
    raw = path.read_bytes() if name not in source.sha256 else content
    problem = source.mismatch(name, raw, content)
    if problem is not None:
        raise DataError(f"{path} is not the canonical {source.title} {name}: {problem}; {fix}")
    digests = {name: hashlib.sha256(content).hexdigest()}
    if name not in source.sha256:
        digests[f"{name}.gz"] = hashlib.sha256(raw).hexdigest()
    return content, digests


def find_folder(source: Source, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder holding `source`'s four files: `data_dir`, else the cache; None when the
    cache lacks them (then `hpstudy.data.sources.locate_source` downloads them)."""
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(
                f"--data-dir {folder} is not a folder; point it at the folder holding the four "
                f"{source.title} files, or drop --data-dir to use the cache"
            )
        missing = [n for n in source.files if idx.find_file(folder, n) is None]
        if missing:
            raise DataError(
                f"{folder} (from --data-dir) lacks {', '.join(missing)} (or their .gz); put the "
                f"four {source.title} files there, or drop --data-dir to use the cache"
            )
        return folder
    cache = source.cache_dir()
    if all(idx.find_file(cache, n) is not None for n in source.files):
        return cache
    return None


def load_folder(source: Source, folder: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(role -> array, file -> SHA-256): the four files in `folder`, verified and decoded."""
    arrays, digests = {}, {}
    for role, name in fashion_mnist.FILES.items():
        path = idx.find_file(folder, name)
        if path is None:  # deleted between locate and now
            raise DataError(f"{folder / name} disappeared while loading; rerun")
        content, file_digests = read_verified(source, path, name)
        magic = idx.IMAGES_MAGIC if role.endswith("images") else idx.LABELS_MAGIC
        arrays[role] = idx.decode_idx(
            content, path, magic=magic, fix=source.fix(path), shape=fashion_mnist.SHAPE
        )
        digests.update(file_digests)
    return arrays, digests
