"""The saved-model file: a state_dict plus the metadata that rebuilds and explains it.

    >>> norm = {"mean": fashion_mnist.PIXEL_MEAN, "std": fashion_mnist.PIXEL_STD}
    >>> path = save_model("runs/paper/final_best_model.pth", state_dict=net.state_dict(),
    ...                   config=cfg, normalization=norm, metrics={"test_accuracy": 0.8812},
    ...                   data_digests=ds.digests)
    >>> loaded = load_model(path)
    >>> loaded.model(x).argmax(1)            # an nn.Sequential in eval mode, built from the file
    >>> loaded.config, loaded.metadata["metrics"]

On disk (schema version 1) the file is `torch.save` of one dict:

    {"format": "hpstudy-model", "schema_version": 1,
     "state_dict": {"0.weight": Tensor, ...},             # CPU tensors, keys of build_model(config)
     "metadata": {"config": Config.to_dict(), "normalization": {"mean": float, "std": float},
                  "class_names": [...], "metrics": {...}, "data_digests": {...},
                  "input_shape": [H, W] or [D] (absent: [28, 28]), "pixel_max": 255 (digits 16),
                  "versions": {"hpstudy", "torch", "python"}, "created": ISO 8601, **extra}}

Everything in it is a tensor, dict, list, str, int, float, bool or None, so it loads with
`torch.load(path, weights_only=True)`. `load_model` loads it that way only: a file never gets to
run code, and each way a file can be wrong has its own `ModelFileError`, among them weights that
hold NaN or infinity (such a model cannot predict; `save_model` refuses to write one as well).
This module is the format and the save and load flow; what the metadata must hold is checked by
`hpstudy.predict.metadata`, on what `save_model` is given and on what `load_model` reads.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import platform
import warnings
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from hpstudy import __version__
from hpstudy.atomic import save_torch_atomic
from hpstudy.config.config import Config
from hpstudy.data import fashion_mnist
from hpstudy.engine.model import build_model, evaluate_net
from hpstudy.errors import UserError
from hpstudy.predict.metadata import (
    SAVE_NORM_FIX,
    check_loaded,
    checked_extra,
    checked_normalization,
)

FORMAT = "hpstudy-model"
SCHEMA_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PROTO = 0x80  # first byte of a protocol >= 2 pickle: torch's legacy format, or raw pickle


class ModelFileError(UserError):
    """A model file that is missing, damaged, unsafe or not an hpstudy model."""


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from its file: ready to call, with the metadata it was saved with."""

    model: nn.Sequential  # build_model(config) with the saved weights, in eval mode
    config: Config
    metadata: dict

    @property
    def normalization(self) -> tuple[float, float]:
        """(mean, std): the model's input is (pixel / 255 - mean) / std."""
        norm = self.metadata["normalization"]
        return norm["mean"], norm["std"]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["class_names"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(H, W) of the images the model takes, or (D,) features; (28, 28) for older files."""
        return tuple(self.metadata.get("input_shape") or (28, 28))

    def evaluate(self, split):
        """Loss, accuracy and predictions on `split` (an engine `Split`), as the run measured."""
        return evaluate_net(self.model, split)

    @property
    def pixel_max(self) -> int | None:
        """The largest pixel value of its training images (digits: 16); None for features."""
        return self.metadata.get("pixel_max", 255) if len(self.input_shape) == 2 else None


def save_model(
    path: str | os.PathLike,
    *,
    state_dict: dict[str, torch.Tensor],
    config: Config,
    normalization: dict[str, float],
    metrics: dict[str, float],
    data_digests: dict[str, str],
    class_names: tuple[str, ...] | list[str] = fashion_mnist.CLASS_NAMES,
    extra: dict | None = None,
) -> Path:
    """Write a model file atomically (temp file in the same folder, then rename); returns its path.

    The state_dict must match `build_model(config)`; it is checked before anything is written, so
    a file at `path` is always a complete, loadable model: `extra`'s `input_shape` and
    `pixel_max` are checked as `load_model` checks them (ValueError). A disk that fills meanwhile
    raises an OSError naming `path` (ENOSPC) and leaves no file there.
    """
    path = Path(path)
    tensors = {str(k): v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    check_state_dict(tensors, config, where="the state_dict given to save_model")
    if len(class_names) != config.n_classes:
        raise ValueError(f"{len(class_names)} class names for a model of {config.n_classes} "
                         "classes; give one name per class")  # fmt: skip
    metadata = {
        "config": config.to_dict(),
        "normalization": checked_normalization(
            normalization, where="save_model", error=ValueError, fix=SAVE_NORM_FIX
        ),
        "class_names": [str(n) for n in class_names],
        "metrics": {str(k): float(v) for k, v in metrics.items()},
        "data_digests": {str(k): str(v) for k, v in data_digests.items()},
        "versions": {
            "hpstudy": __version__,
            "torch": str(torch.__version__),  # a str subclass that weights_only refuses
            "python": platform.python_version(),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if extra:
        metadata.update(checked_extra(extra, config))
    payload = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "state_dict": tensors,
        "metadata": metadata,
    }
    # Prove the promise before the rename: the file loads with weights_only=True. A full disk
    # is an OSError naming `path`, and leaves no file.
    return save_torch_atomic(payload, path, fsync=True, verify=True)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file safely (`weights_only=True`, nothing in the file runs) and rebuild it."""
    path = Path(path)
    payload = _read_payload(path, device)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(
            f"{path} is a PyTorch file but not an hpstudy model (format={found!r}, expected "
            f"{FORMAT!r}); pass a model saved by hpstudy, such as runs/<study>/final_best_model.pth"
        )
    version = payload.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ModelFileError(
            f"{path} has schema_version={version!r}, but this hpstudy reads version "
            f"{SCHEMA_VERSION}; use the hpstudy release that wrote it, or upgrade hpstudy"
        )
    state_dict, metadata = payload.get("state_dict"), payload.get("metadata")
    if not isinstance(state_dict, dict) or not isinstance(metadata, dict):
        raise ModelFileError(
            f"{path} lacks its 'state_dict' or 'metadata' dict; the file is damaged, save it again"
        )
    config = check_loaded(metadata, where=str(path), error=ModelFileError)
    check_state_dict(state_dict, config, where=str(path))
    # build_model draws initial weights from torch's global RNG; fork it so loading a model does
    # not change the random stream of whoever calls us.
    with torch.random.fork_rng(devices=[]):
        model = build_model(config)
    model.load_state_dict(state_dict, strict=True)
    return LoadedModel(model=model.to(device).eval(), config=config, metadata=metadata)


def check_state_dict(state_dict: dict, config: Config, *, where: str) -> None:
    """Raise ModelFileError unless `state_dict` has exactly the keys and shapes of the config."""
    with torch.device("meta"):  # shapes only: no memory, no RNG
        expected = build_model(config).state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise ModelFileError(
            f"{where}: state_dict keys do not match the configuration {config}: missing "
            f"{missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    for key, want in expected.items():
        got = state_dict[key]
        if not isinstance(got, torch.Tensor):
            raise ModelFileError(
                f"{where}: state_dict[{key!r}] is a {type(got).__name__}, not a tensor"
            )
        if tuple(got.shape) != tuple(want.shape):
            raise ModelFileError(
                f"{where}: state_dict[{key!r}] has shape {tuple(got.shape)}, but the configuration "
                f"{config} expects {tuple(want.shape)}; the weights and metadata do not belong "
                "together"
            )
        if not want.is_floating_point():  # a batch norm's num_batches_tracked (int64)
            if got.dtype != want.dtype or got.numel() != 1:
                raise ModelFileError(f"{where}: state_dict[{key!r}] has dtype {got.dtype}, "
                                     f"expected {want.dtype}")  # fmt: skip
            continue
        if not got.is_floating_point():
            raise ModelFileError(f"{where}: state_dict[{key!r}] has dtype {got.dtype}, not float")
        n_bad = int((~torch.isfinite(got)).sum())
        if n_bad:
            # A model with NaN or infinite weights outputs NaN for every input: refuse it here,
            # not image by image later.
            raise ModelFileError(
                f"{where}: state_dict[{key!r}] holds {n_bad:,} NaN or infinity value(s), so the "
                "model cannot predict (its training diverged); retrain it, or use another model"
            )


def _read_payload(path: Path, device: str | torch.device) -> object:
    """torch.load with weights_only=True, each failure turned into one clear ModelFileError."""
    if not path.exists():
        raise ModelFileError(f"no model file at {path}; check the path (e.g. runs/<study>/...)")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file; pass the .pth model file itself")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from exc
    if not head:
        raise ModelFileError(f"{path} is empty (0 bytes): truncated, or not a model; save it again")
    # Anything neither a torch zip nor a pickle is not a model at all; say so rather than relay
    # whatever the unpickler trips over first.
    if not (head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTO):
        raise ModelFileError(
            f"{path} is not a PyTorch model file (it starts with {head!r}); pass a .pth file "
            "saved by hpstudy"
        )
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the error below says it all.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        callables = _foreign_globals(path)
        if callables:
            raise ModelFileError(
                f"{path} contains executable pickle content (it would call "
                f"{', '.join(callables[:3])}) and was not loaded; only models saved by hpstudy "
                "are accepted. Never load it with weights_only=False unless you trust its author"
            ) from exc
        raise ModelFileError(
            f"{path} contains pickle content that safe loading refuses ({_refusal_reason(exc)}) "
            "and was not loaded; pass a model saved by hpstudy with torch.save"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        # torch's messages run to a paragraph; its first sentence names the problem.
        text = str(exc).strip()
        first_line = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
        raise ModelFileError(
            f"{path} is truncated or damaged, or not a model file ({first_line}); save or copy "
            "it again"
        ) from exc


def _refusal_reason(exc: pickle.UnpicklingError) -> str:
    """The unpickler's own reason, e.g. 'Unsupported operand 149'."""
    for line in str(exc).splitlines():
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1].strip()
            if reason:
                return reason.split(". Please use", 1)[0]
    return "objects other than tensors and plain data"


def _foreign_globals(path: Path) -> list[str]:
    """Names of non-torch callables that the file's pickles import, found by reading opcodes.

    Only for the error message: `pickletools.genops` parses the opcode stream without executing
    any of it. Torch's own files import torch.* and collections.OrderedDict; anything else
    (posix.system, pathlib.Path.touch, builtins.getattr) is code the file wants to run.
    """
    try:
        raw = path.read_bytes()
        if raw.startswith(_ZIP_MAGIC):
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                member = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                raw = archive.read(member)
    except (OSError, zipfile.BadZipFile, StopIteration, KeyError):
        return []
    found: list[str] = []
    stream = io.BytesIO(raw)
    # torch's legacy format is several pickles in a row; a raw pickle is one.
    while stream.tell() < len(raw) and len(found) < 10:
        strings: list[str] = []  # string pushes so far: STACK_GLOBAL takes the last two
        memo: dict[int, str | None] = {}
        last: str | None = None  # the string on top of the stack, if the top is one
        try:
            for op, arg, _pos in pickletools.genops(stream):
                pushed: str | None = None
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and ("STRING" in op.name or "UNICODE" in op.name):
                    pushed = str(arg)
                    strings.append(pushed)
                elif op.name == "MEMOIZE":
                    memo[len(memo)], pushed = last, last
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[int(arg)], pushed = last, last
                elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                    pushed = memo.get(int(arg))
                    if pushed is not None:
                        strings.append(pushed)
                last = pushed
        except (ValueError, EOFError, KeyError):
            break
    allowed = ("torch.", "collections.OrderedDict")
    return list(dict.fromkeys(name for name in found if not name.startswith(allowed)))
