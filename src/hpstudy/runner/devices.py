"""Choosing the device: `--device` as given, else CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from hpstudy.errors import UserError


def resolve_device(name: str | None) -> torch.device:
    """torch.device for `name` ('cpu', 'cuda', 'cuda:1'); None picks CUDA when available."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"--device {name} asked for CUDA, but no CUDA device is available; use --device cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")
    return device
