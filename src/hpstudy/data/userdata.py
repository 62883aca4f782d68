"""The user's own data, untrusted: an `.npz` or a folder of four IDX files, read bounded.

    >>> from hpstudy.data import userdata
    >>> ds = userdata.load(Path("shapes.npz"))   # x_train, y_train, x_test, y_test[, classes]
    >>> ds.input_shape, ds.class_names
    ((12, 12), ('circle', 'square', 'triangle'))

An `.npz` is a zip of `.npy` files: each array's header (dtype, shape) is read and checked before
its data, so an array that declares more than `MAX_ARRAY_BYTES` is refused having read a few
hundred bytes, and nothing is ever unpickled. An IDX folder holds `train-images-idx3-ubyte`,
`train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (each may be
`.gz`), read by `idx.read_bytes` with the same bound. Every problem is a `DataError` of one line:
the file, what is wrong, what to do.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np

from hpstudy.data import fashion_mnist, idx
from hpstudy.data.dataset import build
from hpstudy.errors import DataError

MAX_ARRAY_BYTES = 4 * 2**30  # one array; a larger one would not fit a study in memory anyway
MAX_EXAMPLES = 2**26  # per split
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_FIX_NPZ = "write it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def load(path: Path):
    """The `Dataset` in the `.npz` file or IDX folder `path`."""
    if path.is_dir():
        arrays, classes, digests = _read_idx_folder(path)
    elif path.exists():
        arrays, classes, digests = _read_npz(path)
    else:
        raise DataError(
            f"{path} does not exist; [data] path must name an .npz file or a folder of four IDX "
            "files"
        )
    class_names = check(path, arrays, classes)
    x, y, xt, yt = (arrays[k] for k in ARRAYS)
    return build(str(path), x, y, xt, yt, class_names, digests, source=path)


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict[str, str]]:
    fix = _FIX_NPZ
    with idx.open_regular(path, fix) as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        fh.seek(0)
        try:
            with zipfile.ZipFile(fh) as archive:
                members = set(archive.namelist())
                missing = [k for k in ARRAYS if f"{k}.npy" not in members]
                if missing:
                    raise DataError(
                        f"{path} lacks {', '.join(missing)} (it holds "
                        f"{', '.join(sorted(m.removesuffix('.npy') for m in members)) or 'nothing'}"
                        f"); {fix}"
                    )
                keys = [*ARRAYS, *(["classes"] if "classes.npy" in members else [])]
                arrays = {k: _read_member(archive, path, k) for k in keys}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({exc}); {fix}") from exc
    return arrays, arrays.pop("classes", None), {path.name: digest}


def _read_member(archive: zipfile.ZipFile, path: Path, key: str) -> np.ndarray:
    """One array, its header checked before its data is read."""
    info = archive.getinfo(f"{key}.npy")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(f)
        _check_declared_shape(path, key, shape)
        n_bytes = math.prod(shape) * dtype.itemsize
        # Features are copied to float64 for their statistics (dataset.pixel_statistics): the
        # cap holds for that copy, not only for the file's dtype.
        n_held = math.prod(shape) * max(dtype.itemsize, 8) if key.startswith("x") else n_bytes
        if dtype.hasobject:
            raise DataError(
                f"{path}: {key} holds Python objects (dtype {dtype}), which hpstudy never "
                f"unpickles; save numbers (or strings for classes); {_FIX_NPZ}"
            )
        if n_held > MAX_ARRAY_BYTES or (shape and shape[0] > MAX_EXAMPLES):
            copy = f", {n_held:,} as float64" if n_held != n_bytes else ""
            raise DataError(
                f"{path}: {key} declares shape {shape} of {dtype} ({n_bytes:,} bytes{copy}), "
                f"more than the {MAX_ARRAY_BYTES:,} bytes hpstudy holds per array; it was refused "
                "before reading it; use a smaller dataset"
            )
        if info.file_size < n_bytes:
            raise DataError(
                f"{path}: {key} declares {n_bytes:,} bytes of data but holds {info.file_size:,}: "
                f"the file is truncated or damaged; {_FIX_NPZ}"
            )
    with archive.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _check_declared_shape(path: Path, key: str, shape: tuple) -> None:
    """A header's shape: non-negative sizes, and for inputs no axis of width zero."""
    if any(n < 0 for n in shape):
        raise DataError(f"{path}: {key} declares shape {shape}, with a negative size; the file "
                        f"is damaged; {_FIX_NPZ}")  # fmt: skip
    if key.startswith("x") and 0 in shape[1:]:
        raise DataError(f"{path}: {key} declares shape {shape}: examples of no values; each "
                        "example needs at least one value (N, H, W) or (N, D)")  # fmt: skip


def _read_idx_folder(folder: Path) -> tuple[dict[str, np.ndarray], None, dict[str, str]]:
    names = dict(zip(ARRAYS, fashion_mnist.FILES.values(), strict=True))
    fix = "write the four files as IDX (unsigned bytes; images 0x803, labels 0x801)"
    arrays, digests = {}, {}
    for key, name in names.items():
        path = idx.find_file(folder, name)
        if path is None:
            raise DataError(
                f"{folder} lacks {name} (or {name}.gz); a data folder holds "
                f"{', '.join(names.values())}; {fix}"
            )
        magic = idx.IMAGES_MAGIC if key.startswith("x") else idx.LABELS_MAGIC
        # Images are bytes, copied to float64 for their statistics: 8 bytes a pixel held.
        cap = MAX_ARRAY_BYTES // 8 if key.startswith("x") else MAX_ARRAY_BYTES
        content = idx.read_bytes(
            path, magic=magic, max_count=MAX_EXAMPLES, fix=fix, shape=None, max_bytes=cap,
        )  # fmt: skip
        arrays[key] = idx.decode_idx(content, path, magic=magic, fix=fix, shape=None)
        digests[name] = hashlib.sha256(content).hexdigest()
    return arrays, None, digests


def check(path: Path, arrays: dict[str, np.ndarray], classes: np.ndarray | None) -> tuple[str, ...]:
    """Convert `arrays` in place to the Dataset's dtypes and return the class names, or raise
    `DataError` naming `path`, the array and the fix."""
    for split in ("train", "test"):
        x, y = f"x_{split}", f"y_{split}"
        arrays[x] = _features(path, x, arrays[x])
        arrays[y] = _labels(path, y, arrays[y])
        if len(arrays[x]) != len(arrays[y]):
            raise DataError(
                f"{path}: {x} holds {len(arrays[x]):,} examples but {y} {len(arrays[y]):,} "
                f"labels; they must match one to one"
            )
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(
            f"{path}: x_train examples have shape {arrays['x_train'].shape[1:]} but x_test "
            f"{arrays['x_test'].shape[1:]}; both splits need the same input shape"
        )
    k = _n_classes(path, classes, arrays)  # labels checked before any list of K names is made
    names = _class_names(path, classes, arrays)
    for y in ("y_train", "y_test"):
        bad = arrays[y][(arrays[y] < 0) | (arrays[y] >= k)]
        if bad.size:
            raise DataError(
                f"{path}: {y} holds label {bad[0]} outside 0..{k - 1} ({k} classes); labels must "
                "be the integers 0..K-1, one per class"
            )
    absent = np.flatnonzero(np.bincount(arrays["y_train"], minlength=k) == 0)
    if absent.size:
        raise DataError(
            f"{path}: class {absent[0]} ({names[absent[0]]!r}) has no example in y_train; every "
            "class needs training examples: add some, or drop the class and renumber the labels"
        )
    return names


def _features(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(
            f"{path}: {key} has dtype {x.dtype}; expected uint8 images (pixels 0-255) or float "
            f"features; convert it, e.g. {key}.astype(np.uint8) or {key}.astype(np.float32)"
        )
    if x.ndim not in (2, 3):
        raise DataError(
            f"{path}: {key} has shape {x.shape}; expected (N, H, W) images or (N, D) features "
            "(convert colour images to grey or flatten them)"
        )
    if len(x) == 0:
        raise DataError(f"{path}: {key} is empty (shape {x.shape}); every split needs examples")
    if 0 in x.shape[1:]:
        raise DataError(f"{path}: {key} has shape {x.shape}: examples of no values; each "
                        "example needs at least one value")  # fmt: skip
    if x.dtype == np.uint8:
        return x
    x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        first = int(np.flatnonzero(~finite.reshape(len(x), -1).all(axis=1))[0])
        raise DataError(
            f"{path}: {key} holds {int((~finite).sum()):,} NaN or infinite values (in float32; "
            f"first in example {first}); remove or impute them"
        )
    return x


def _labels(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{path}: {key} has dtype {y.dtype}; expected integer class labels 0..K-1; "
            f"convert it, e.g. {key}.astype(np.int64)"
        )
    if y.ndim != 1:
        raise DataError(f"{path}: {key} has shape {y.shape}; expected one label per example (N,)")
    if len(y) == 0:
        raise DataError(f"{path}: {key} is empty; every split needs examples")
    return y.astype(np.int64)


def _n_classes(path: Path, classes: np.ndarray | None, arrays: dict) -> int:
    """K: the length of `classes`, else the largest label + 1, which every class needing a
    training example bounds by the length of y_train (a label of 2**40 is refused here)."""
    if classes is not None:
        return len(classes) if classes.ndim == 1 else 0
    n_train = len(arrays["y_train"])
    for y in ("y_train", "y_test"):
        low, high = int(arrays[y].min()), int(arrays[y].max())
        if low < 0:
            raise DataError(f"{path}: {y} holds label {low}; labels must be the integers 0..K-1, "
                            "one per class")  # fmt: skip
        if high >= n_train:
            raise DataError(f"{path}: {y} holds label {high}, but every class 0..{high} needs a "
                            f"training example and y_train has {n_train:,}; labels must be the "
                            "integers 0..K-1, one per class")  # fmt: skip
    return int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1


def _class_names(path: Path, classes: np.ndarray | None, arrays: dict) -> tuple[str, ...]:
    """`classes` as a tuple of unique strings, or "0".."K-1" with K from the largest label."""
    if classes is None:
        return tuple(str(c) for c in range(_n_classes(path, classes, arrays)))
    n_train = len(arrays["y_train"])
    if classes.ndim == 1 and len(classes) > n_train:  # before a list of that many is made
        raise DataError(f"{path}: classes names {len(classes):,} classes but y_train has "
                        f"{n_train:,} examples, and every class needs one; name only the classes "
                        "the labels use")  # fmt: skip
    names = tuple(str(c) for c in classes.tolist()) if classes.ndim == 1 else ()
    if classes.dtype.kind not in "U" or not names or len(set(names)) != len(names):
        raise DataError(
            f"{path}: classes must be a 1-D array of distinct strings, one per label 0..K-1, got "
            f"dtype {classes.dtype} and shape {classes.shape}"
        )
    if not all(0 < len(n) <= 100 and n.isprintable() for n in names):
        raise DataError(
            f"{path}: each class name must be 1 to 100 printable characters, got {names!r:.200}"
        )
    return names
