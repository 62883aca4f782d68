"""What a model file's metadata must be, checked on save and on load.

    >>> from hpstudy.predict import metadata
    >>> extra = metadata.checked_extra({"input_shape": (28, 28), "pixel_max": 255}, config)
    >>> extra["input_shape"]                       # a tuple is stored as a list
    [28, 28]
    >>> config = metadata.check_loaded(payload["metadata"], where="m.pth", error=ModelFileError)

`hpstudy.predict.modelfile` writes and reads the file; the rules for what the metadata holds
live here, once, so that `save_model` never writes a file that `load_model` would refuse. The
same check serves both sides with two outcomes: a caller's bad argument to `save_model` is a
`ValueError` that says what to pass; a bad value in a file is the loader's `ModelFileError` that
says the file was edited or damaged. Each refusal is one line naming where (the file, or
`save_model`), the key, the value (cut short: an edited file may hold a megabyte-long string)
and the fix. The values checked are those that predict computes from: `input_shape` (it resizes
images to it), `pixel_max` (it scales pixels by it), `normalization`, `class_names` and `config`
(which rebuilds the network).
"""

from __future__ import annotations

import math

import torch

from hpstudy.config.config import Config
from hpstudy.errors import UserError

# Keys `save_model` writes into the metadata; `extra` may not overwrite them.
CORE_KEYS = (
    "config",
    "normalization",
    "class_names",
    "metrics",
    "data_digests",
    "versions",
    "created",
)

# What to do about a bad value: in a file (load_model), and in what a caller gives save_model.
_EDITED = "the metadata was edited or damaged: use the file as `hpstudy run` saved it"
_SAVE_SHAPE_FIX = "pass the training data's input_shape, e.g. list(data.input_shape)"
_SAVE_PIXEL_MAX_FIX = "pass the training images' largest pixel value, or None for features"
SAVE_NORM_FIX = "pass the mean and std the model's inputs were normalised with"

# What pixel_max may be: the largest pixel value of the training images (digits 16, 255 for
# 8-bit images); predict scales 0..255 inputs onto 0..pixel_max.
_PIXEL_MAX_RANGE = (1, 255)


def checked_extra(extra: dict, config: Config) -> dict:
    """`save_model`'s `extra` metadata, checked (ValueError, TypeError) and copied: no core key,
    plain data only, and `input_shape` (a tuple becomes a list) and `pixel_max` as a file must
    hold them."""
    clash = sorted(set(extra) & set(CORE_KEYS))
    if clash:
        raise ValueError(f"extra metadata may not replace {clash}; use other key names")
    check_plain(extra, "extra")
    extra = dict(extra)
    if "input_shape" in extra:
        shape = extra["input_shape"]
        extra["input_shape"] = list(shape) if isinstance(shape, tuple) else shape
        check_input_shape(extra["input_shape"], config, where="save_model extra",
                          error=ValueError, fix=_SAVE_SHAPE_FIX)  # fmt: skip
    if "pixel_max" in extra:
        check_pixel_max(extra["pixel_max"], where="save_model extra", error=ValueError,
                        fix=_SAVE_PIXEL_MAX_FIX)  # fmt: skip
    return extra


def check_loaded(metadata: dict, *, where: str, error: type[Exception]) -> Config:
    """The `Config` a file's metadata describes, once every value predict relies on is checked:
    config, normalization, class names, input_shape (absent: [28, 28]) and pixel_max."""
    config = config_from(metadata, where=where, error=error)
    checked_normalization(metadata.get("normalization"), where=where, error=error)
    names = metadata.get("class_names")
    if not (
        isinstance(names, list)
        and len(names) == config.n_classes
        and all(isinstance(n, str) for n in names)
    ):
        raise error(
            f"{where}: metadata 'class_names' must be a list of {config.n_classes} names (the "
            f"model's classes), got {names!r:.200}"
        )
    # Checked before anything is computed from them: predict resizes images to input_shape and
    # scales pixels by pixel_max.
    check_input_shape(metadata.get("input_shape", [28, 28]), config, where=where, error=error)
    check_pixel_max(metadata.get("pixel_max"), where=where, error=error)
    # Not used to predict, but the report's model card and provenance print them.
    check_text_map(metadata, "metrics", numbers=True, where=where, error=error)
    for key in ("data_digests", "versions"):
        check_text_map(metadata, key, numbers=False, where=where, error=error)
    return config


def check_text_map(metadata: dict, key: str, *, numbers: bool, where: str,
                   error: type[Exception]) -> None:  # fmt: skip
    """`metadata[key]`, when present, maps names to finite numbers (`numbers`) or to strings."""
    value = metadata.get(key, {})
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if numbers and all(_finite_number(v) for v in value.values()):
            return
        if not numbers and all(isinstance(v, str) for v in value.values()):
            return
    kind = "finite numbers" if numbers else "strings"
    raise error(f"{where}: metadata '{key}' must map names to {kind}, got {value!r:.200}; "
                f"{_EDITED}")  # fmt: skip


def _finite_number(value: object) -> bool:
    if type(value) not in (int, float):  # bool is no metric
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float's range
        return False


def config_from(metadata: dict, *, where: str, error: type[Exception]) -> Config:
    """The metadata's `config` dict as a validated `Config`."""
    raw = metadata.get("config")
    if not isinstance(raw, dict):
        raise error(f"{where}: metadata has no 'config' dict; the file is not usable")
    try:
        return Config.from_dict(raw)
    except (UserError, TypeError, ValueError) as exc:  # Config says lr=10**400 in one line too
        raise error(f"{where}: invalid configuration in metadata: {exc}; {_EDITED}") from exc


def check_input_shape(shape: object, config: Config, *, where: str, error: type[Exception],
                      fix: str = _EDITED) -> None:  # fmt: skip
    """[H, W] or [D] of positive integers that the model's first layer takes: H * W (or D) is
    its `n_inputs`, and a CNN, whose convolutions see square images, needs [side, side]. The
    product bounds each value by `n_inputs`, which `Config` bounds: no absurd size gets through
    to predict, which resizes every image to this shape."""
    plain = (
        isinstance(shape, list)
        and len(shape) in (1, 2)
        and all(type(n) is int and n > 0 for n in shape)  # bool is no size
    )
    if not plain or math.prod(shape) != config.n_inputs:
        raise error(
            f"{where}: metadata 'input_shape' must be [H, W] or [D] with {config.n_inputs} "
            f"values in all (the model's inputs), got {shape!r:.200}; {fix}"
        )
    side = config.image_side
    if config.is_cnn and shape != [side, side]:
        # predict would resize images to `shape` while the convolutions read side x side.
        raise error(
            f"{where}: metadata 'input_shape' is {shape}, but the model is a CNN whose first "
            f"convolution takes {side} x {side} images; {fix}"
        )


def check_pixel_max(value: object, *, where: str, error: type[Exception],
                    fix: str = _EDITED) -> None:  # fmt: skip
    """An integer in 1..255, or None (data that is not 8-bit images); absent means 255."""
    low, high = _PIXEL_MAX_RANGE
    if value is None or (type(value) is int and low <= value <= high):  # bool is no pixel value
        return
    raise error(
        f"{where}: metadata 'pixel_max' must be an integer in {low}..{high} (the largest pixel "
        f"value of the training images: 255, or 16 for digits), got {value!r:.60}; {fix}"
    )


def checked_normalization(norm: object, *, where: str, error: type[Exception],
                          fix: str = _EDITED) -> dict:  # fmt: skip
    """{'mean': float, 'std': float > 0}, or `error` naming `where` and the bad value."""
    ok = isinstance(norm, dict) and all(
        isinstance(norm.get(k), int | float) and not isinstance(norm.get(k), bool)
        for k in ("mean", "std")
    )
    if ok:
        try:
            mean, std = float(norm["mean"]), float(norm["std"])
        except OverflowError:  # an integer beyond float's range (10**400): no mean or std
            mean = std = math.nan
        if math.isfinite(mean) and math.isfinite(std) and std > 0:
            return {"mean": mean, "std": std}
    # The echo is cut short: an edited file may hold a megabyte-long string there.
    raise error(f"{where}: metadata 'normalization' must be {{'mean': float, 'std': float > 0}}, "
                f"got {norm!r:.200}; {fix}")  # fmt: skip


def check_plain(value: object, where: str) -> None:
    """Only what weights_only loading accepts: dicts, lists, tuples, str, numbers, bool, None."""
    # Exact types: subclasses (numpy floats, TorchVersion) are globals to the unpickler.
    if value is None or type(value) in (str, int, float, bool) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} must be a str or int")
            check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; a model file holds only tensors, dicts, lists, "
        "str, int, float, bool and None (so it loads with weights_only=True)"
    )
