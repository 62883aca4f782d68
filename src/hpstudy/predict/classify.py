"""Classify images with a saved model: read them, make them look like FashionMNIST, predict.

    >>> from hpstudy.predict import modelfile
    >>> from hpstudy.predict import classify as predict
    >>> loaded = modelfile.load_model("runs/paper/final_best_model.pth")
    >>> items, failures = predict.collect_inputs(["shoe.jpg", "photos/", "t10k-images-idx3-ubyte"])
    >>> for outcome in predict.classify(loaded, items, invert="auto", batch_size=256):
    ...     print(outcome.input, outcome.class_name, outcome.top3)   # or a Failure with .reason

Inputs are image files (PNG, JPEG and whatever else Pillow reads, any size and mode), folders of
them (files with an image suffix, sorted; subfolders with `recursive=True`) and IDX image files
(`*idx3-ubyte`, optionally gzipped; item `i` is named `path#i`).

An image becomes a model input the way FashionMNIST's own images were made: grayscale; inverted
when its background is light (FashionMNIST shows light garments on black), decided from the median
of its border pixels; trimmed to the bounding box of what differs from the background; resized so
the longest edge is 28; padded with the background value to 28 x 28, centred; then normalised as
`(pixel / 255 - mean) / std` with the model's own mean and std. An image that is already 28 x 28
skips the geometry and keeps every pixel, so the dataset's images written as PNG classify exactly as
the dataset does. Nothing here prints; failures come back as `Failure` values.

Every input is bounded before it is read: anything but a regular file (a FIFO, a device) is refused
without a blocking open; an image file over `MAX_IMAGE_BYTES` on disk or over Pillow's
`Image.MAX_IMAGE_PIXELS` (checked from its header, before decoding) is refused as a possible
decompression bomb; an IDX file is read as `idx.read_bytes` reads one (header first, at most
`MAX_IDX_IMAGES` images, never past what the header declares). An image for which the model's
outputs are not finite is a `Failure` too, so no probability is ever NaN.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from hpstudy.data import fashion_mnist, idx
from hpstudy.errors import DataError, UserError
from hpstudy.predict.modelfile import LoadedModel

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
INVERT_MODES = ("auto", "never", "always")
SIDE = fashion_mnist.N_ROWS  # 28: FashionMNIST images are SIDE x SIDE
N_TOP = 3
# Bounds on what one input may cost. A photo of a garment needs a few megabytes at most; EMNIST,
# the largest 28 x 28 IDX set in use, holds about 700,000 images (550 MB).
MAX_IMAGE_BYTES = 100 * 2**20
MAX_IDX_IMAGES = 1_000_000
_IDX_FIX = (
    f"pass an IDX image file of at most {MAX_IDX_IMAGES:,} 28 x 28 images (N x 28 x 28 unsigned "
    "bytes, optionally gzipped), or split it"
)
# Pixels further than this from the background value count as content when trimming; high enough
# to ignore JPEG noise on a plain background, low enough to keep a garment's faint edges.
_TRIM_THRESHOLD = 24
# What a damaged or foreign file makes Pillow raise while identifying or decoding it.
_UNREADABLE = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
    Image.DecompressionBombError,
    DataError,
    MemoryError,  # an input that fits the bounds but not this machine: refuse it, keep going
)


@dataclass(frozen=True, eq=False)
class InputImage:
    """One image to classify; files are read only when their batch comes up."""

    name: str  # how results refer to it: the path, or 'path#index' inside an IDX file
    path: Path
    pixels: np.ndarray | None = None  # (28, 28) uint8 for an IDX image; None for an image file


@dataclass(frozen=True)
class Prediction:
    input: str  # InputImage.name
    class_name: str  # the most probable class
    top3: tuple[tuple[str, float], ...]  # (class name, probability), most probable first
    inverted: bool  # whether the image was inverted before classification
    resized_from: tuple[int, int] | None = None  # (H, W) of an image resized to the model's

    def to_dict(self) -> dict:
        """The `--json` record: input, class and top3 as a list of {class, probability}."""
        return {
            "input": self.input,
            "class": self.class_name,
            "top3": [{"class": c, "probability": round(p, 6)} for c, p in self.top3],
        }


@dataclass(frozen=True)
class Failure:
    input: str  # the path (or folder) that could not be classified
    reason: str  # what went wrong, without the path


def collect_inputs(
    paths: Iterable[str | Path], *, recursive: bool = False
) -> tuple[list[InputImage], list[Failure]]:
    """Expand files, folders and IDX files into images, in order; report what cannot be used."""
    items: list[InputImage] = []
    failures: list[Failure] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = _folder_images(path, recursive=recursive)
            if not files:
                hint = "" if recursive else "; add --recursive to look in subfolders"
                failures.append(
                    Failure(str(path), f"no images ({', '.join(IMAGE_SUFFIXES)}) here{hint}")
                )
            for file in files:
                _expand_file(file, items, failures)
        elif path.exists():
            _expand_file(path, items, failures)
        else:
            failures.append(Failure(str(path), "no such file or folder"))
    return items, failures


def is_idx(path: Path) -> bool:
    """IDX image files go by their canonical names: '...idx3-ubyte', optionally '.gz'."""
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(("idx3-ubyte", ".idx3"))


def read_idx_images(path: Path) -> np.ndarray:
    """All images of an IDX file as (N, 28, 28) uint8; DataError if it is not one."""
    content = idx.read_bytes(  # gzip or not; bounded by its header
        path, magic=idx.IMAGES_MAGIC, max_count=MAX_IDX_IMAGES, fix=_IDX_FIX, shape=(SIDE, SIDE)
    )
    n_images = int.from_bytes(content[4:8], "big")
    return idx.decode_idx(
        content, path, magic=idx.IMAGES_MAGIC, count=n_images, fix=_IDX_FIX, shape=(SIDE, SIDE)
    )


def read_grayscale(path: Path) -> np.ndarray:
    """An image file as (H, W) uint8 grayscale, upright, transparency flattened onto white."""
    with idx.open_regular(path, "pass the image file itself (PNG, JPEG, ...)") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_IMAGE_BYTES:
            raise DataError(
                f"{path} is {size:,} bytes, larger than the {MAX_IMAGE_BYTES:,} bytes an image "
                "may be; it was not opened. Shrink it (a few hundred pixels per side is plenty)"
            )
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice that; the check below refuses.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(f)
        with img:
            width, height = img.size
            if width * height > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(_too_many_pixels(width * height))
            img.load()  # decode now, so a damaged file fails here and is reported by name
            img = ImageOps.exif_transpose(img)  # photos store their rotation in EXIF
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit scans: Pillow's convert("L") clips at 255 instead of scaling.
        wide = np.asarray(img, dtype=np.float64)
        scale = 257.0 if wide.max() > 255 else 1.0
        return np.clip(np.rint(wide / scale), 0, 255).astype(np.uint8)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        # Viewers show transparent areas on white; the light-background rule then inverts.
        rgba = img.convert("RGBA")
        img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img.alpha_composite(rgba)
    return np.asarray(img.convert("L"))


def fit_to_mnist(
    gray: np.ndarray, invert: str = "auto", shape: tuple[int, int] = (SIDE, SIDE)
) -> tuple[np.ndarray, bool]:
    """`shape` (default (28, 28)) uint8 in FashionMNIST's style from (H, W) uint8 grayscale;
    and whether inverted."""
    _check_invert(invert)
    side_h, side_w = shape
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    background = float(np.median(border))  # the median ignores a garment touching the edge
    inverted = invert == "always" or (invert == "auto" and background > 127.5)
    if inverted:
        gray = 255 - gray
        background = 255.0 - background
    if gray.shape == tuple(shape):
        return gray, inverted  # already the dataset's size: no resampling, every pixel kept
    content = np.abs(gray.astype(np.int16) - background) > _TRIM_THRESHOLD
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if rows.size:  # a blank image has nothing to trim to: keep it whole
        gray = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = gray.shape
    scale = min(side_h / height, side_w / width)
    new_w = min(side_w, max(1, round(width * scale)))
    new_h = min(side_h, max(1, round(height * scale)))
    small = Image.fromarray(np.ascontiguousarray(gray)).resize(
        (new_w, new_h), Image.Resampling.LANCZOS
    )
    canvas = np.full((side_h, side_w), round(background), dtype=np.uint8)
    top, left = (side_h - new_h) // 2, (side_w - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = np.asarray(small)
    return canvas, inverted


def prepare(
    item: InputImage, invert: str = "auto", shape: tuple[int, int] = (SIDE, SIDE)
) -> tuple[np.ndarray, bool]:
    """The `shape` uint8 pixels the model sees for one input, and whether they were inverted.
    An image file of another size is resized; an IDX image (a dataset's) of another size is
    refused with a DataError naming both sizes."""
    if item.pixels is not None and item.pixels.shape != tuple(shape):
        h, w = item.pixels.shape
        raise DataError(
            f"is a {h} x {w} IDX image but the model takes {shape[0]} x {shape[1]} images; "
            "refused (a dataset is not resized): classify it with a model trained on "
            f"{h} x {w} images, or pass it as image files, which are resized"
        )
    gray = item.pixels if item.pixels is not None else read_grayscale(item.path)
    return fit_to_mnist(gray, invert, shape)


def _to_model_range(pixels: np.ndarray, pixel_max: int) -> np.ndarray:
    """0..255 pixels onto the 0..pixel_max range the model was trained on (digits: 0..16)."""
    if pixel_max == 255:
        return pixels
    return np.rint(pixels.astype(np.float64) * (pixel_max / 255)).astype(np.uint8)


def normalize(pixels: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 784) float32 model input: (pixel / 255 - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).reshape(len(pixels), -1)
    return (x.float().div(255) - mean) / std


def classify(
    loaded: LoadedModel,
    items: Sequence[InputImage],
    *,
    invert: str = "auto",
    batch_size: int = 256,
    on_progress: Callable[[int], object] | None = None,
) -> Iterator[Prediction | Failure]:
    """One Prediction or Failure per item, in order; reads and classifies `batch_size` at a time.

    `on_progress(n)` is called after each batch with the number of items it held.
    """
    _check_invert(invert)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size must be an integer >= 1, got {batch_size!r}")
    mean, std = loaded.normalization
    names = loaded.class_names
    shape = loaded.input_shape
    if len(shape) != 2:
        raise UserError(
            f"this model takes {shape[0]} features per example, not images; hpstudy predict "
            "classifies images, so it cannot feed this model: evaluate it on feature vectors "
            "in Python (hpstudy.predict.modelfile.load_model(path).model(x))"
        )
    pixel_max = loaded.pixel_max or 255
    device = next(loaded.model.parameters()).device
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        outcomes: list[Prediction | Failure | None] = [None] * len(chunk)
        good: list[tuple[int, np.ndarray, bool]] = []  # (position in chunk, pixels, inverted)
        resized: dict[int, tuple[int, int]] = {}  # position in chunk -> the file's (H, W)
        for i, item in enumerate(chunk):
            try:
                pixels, inverted = prepare(item, invert, shape)
            except _UNREADABLE as exc:
                outcomes[i] = Failure(item.name, _describe(exc, item.path))
            else:
                good.append((i, _to_model_range(pixels, pixel_max), inverted))
                if item.pixels is None:
                    resized[i] = _size_of(item.path)
        if good:
            x = normalize(np.stack([p for _, p, _ in good]), mean, std).to(device)  # (B, H * W)
            with torch.inference_mode():
                logits = loaded.model(x).float().cpu()  # (B, 10)
            finite = torch.isfinite(logits).all(dim=1).tolist()  # (B,)
            # The class is the argmax of the logits, as every accuracy figure computes it.
            classes = logits.argmax(dim=1).tolist()
            top_p, top_i = torch.softmax(logits, dim=1).topk(min(N_TOP, len(names)), dim=1)
            for (i, _, inverted), ok, cls, ps, idx in zip(
                good, finite, classes, top_p.tolist(), top_i.tolist(), strict=True
            ):
                if not ok:  # overflow in a model with huge weights: no probability to report
                    outcomes[i] = Failure(chunk[i].name, _NOT_FINITE)
                    continue
                top3 = tuple((names[j], p) for j, p in zip(idx, ps, strict=True))
                was = resized.get(i)
                outcomes[i] = Prediction(chunk[i].name, names[cls], top3, inverted,
                                         was if was != shape else None)  # fmt: skip
        if on_progress is not None:
            on_progress(len(chunk))
        yield from outcomes  # type: ignore[misc] - every slot is filled above


def _size_of(path: Path) -> tuple[int, int] | None:
    """(H, W) of an image file, from its header (it was decoded once already)."""
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except _UNREADABLE:  # replaced since: the prediction stands, its note does not
        return None


def _folder_images(folder: Path, *, recursive: bool) -> list[Path]:
    """Image and IDX files in `folder`, sorted; hidden files and other files are skipped."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    found = []
    for path in candidates:
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if hidden or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES or is_idx(path):
            found.append(path)
    return sorted(found)


def _expand_file(path: Path, items: list[InputImage], failures: list[Failure]) -> None:
    if not is_idx(path):
        items.append(InputImage(str(path), path))
        return
    try:
        images = read_idx_images(path)  # (N, 28, 28)
    except (DataError, MemoryError) as exc:
        failures.append(Failure(str(path), _describe(exc, path)))
        return
    items.extend(InputImage(f"{path}#{i}", path, images[i]) for i in range(len(images)))


def _describe(exc: BaseException, path: Path) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return (
            "not an image that Pillow can read (PNG, JPEG, ...): damaged, or another kind of file"
        )
    if isinstance(exc, Image.DecompressionBombError):
        # Pillow refuses twice its limit itself, in its own words; ours name the size and fix.
        found = re.search(r"Image size \((\d+) pixels\)", str(exc))
        return _too_many_pixels(int(found.group(1))) if found else str(exc)
    if isinstance(exc, MemoryError):
        return "not enough memory to decode it on this machine; shrink it or free some memory"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    message = str(exc) or type(exc).__name__
    # DataError messages start with the path; the caller prints it already.
    return message.removeprefix(f"{path} ").removeprefix(f"{path}: ")


_NOT_FINITE = (
    "the model's outputs for it are not finite (NaN or infinity), so it has no class; the model's "
    "weights are too large for float32: retrain it, or use another model"
)


def _too_many_pixels(n_pixels: int) -> str:
    return (
        f"has {n_pixels:,} pixels, more than the limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
        "(Pillow's Image.MAX_IMAGE_PIXELS): refused as a possible decompression bomb; shrink it "
        "(a few hundred pixels per side is plenty)"
    )


def _check_invert(invert: str) -> None:
    if invert not in INVERT_MODES:
        raise UserError(f"invert must be one of {', '.join(INVERT_MODES)}, got {invert!r}")
