"""Configurations as frozen values, and the paper's named choices.

    >>> cfg = Config(topology="T4", optimizer="adam", lr=0.005)
    >>> print(cfg)
    T4[784-256-128-64-10] adam lr=0.005 relu seed=42 bs=64 epochs=20 patience=3
    >>> cfg.layer_sizes
    (784, 256, 128, 64, 10)

A configuration is hashable and printable as one line; a trial's identity is its configuration
plus protocol and split (see `hpstudy.store`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

from hpstudy.errors import UserError

N_INPUTS = 784  # 28 x 28 pixels: FashionMNIST's, the default
N_CLASSES = 10

# The paper's five topologies, as hidden-layer widths.
TOPOLOGIES: dict[str, tuple[int, ...]] = {
    "T1": (128,),
    "T2": (256, 128),
    "T3": (512, 256),
    "T4": (256, 128, 64),
    "T5": (1024, 512),
}

# Canonical lower-case names -> the names the paper prints.
ACTIVATIONS: dict[str, str] = {
    "relu": "ReLU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "leaky_relu": "LeakyReLU",
    "elu": "ELU",
}
LEAKY_RELU_SLOPE = 0.01

OPTIMIZERS: dict[str, str] = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop"}

# What can be built: a population stacks M copies of every layer, so one layer of 10^8
# weights is already 400 MB per member in float32; seeds go to torch as 64-bit integers.
MAX_LAYER_WEIGHTS = 100_000_000
MAX_HIDDEN_LAYERS = 64
MAX_SEED = 2**63 - 1


def _canonical(name: str, choices: dict[str, str], what: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    for canonical, display in choices.items():
        if key in (canonical, display.lower(), canonical.replace("_", "")):
            return canonical
    raise UserError(f"unknown {what} {name!r}; expected one of: {', '.join(choices.values())}")


def parse_topology(value: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'T4', [256, 128, 64] or the full layer list [784, 256, 128, 64, 10] -> hidden widths."""
    if isinstance(value, str):
        name = value.strip().upper()
        if name in TOPOLOGIES:
            return TOPOLOGIES[name]
        raise UserError(
            f"unknown topology {value!r}; expected one of {', '.join(TOPOLOGIES)} "
            "or a list of hidden-layer widths such as [256, 128]"
        )
    sizes = tuple(value)
    if len(sizes) >= 2 and sizes[0] == N_INPUTS and sizes[-1] == N_CLASSES:
        sizes = sizes[1:-1]
    if not sizes or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes
    ):
        raise UserError(
            f"a topology needs at least one positive integer hidden width, got {list(value)!r}"
        )
    _check_buildable(sizes)
    return sizes


def _check_buildable(
    hidden: tuple[int, ...], n_inputs: int = N_INPUTS, n_classes: int = N_CLASSES
) -> None:
    """Refuse shapes no device could hold before anything tries to allocate them."""
    if len(hidden) > MAX_HIDDEN_LAYERS:
        raise UserError(f"a topology of {len(hidden)} hidden layers; at most "
                        f"{MAX_HIDDEN_LAYERS}: use fewer layers")  # fmt: skip
    layers = (n_inputs, *hidden, n_classes)
    for n_in, n_out in itertools.pairwise(layers):
        if n_in * n_out > MAX_LAYER_WEIGHTS:
            raise UserError(f"layer {n_in}x{n_out} has {n_in * n_out:,} weights; at most "
                            f"{MAX_LAYER_WEIGHTS:,} per layer (400 MB in float32): use "
                            "narrower layers")  # fmt: skip


def topology_name(hidden: tuple[int, ...]) -> str | None:
    """'T4' for the paper's (256, 128, 64); None for other shapes."""
    for name, sizes in TOPOLOGIES.items():
        if sizes == hidden:
            return name
    return None


@dataclass(frozen=True)
class Config:
    """One trainable configuration: everything that decides a training run."""

    topology: tuple[int, ...] = field(default=TOPOLOGIES["T4"])  # hidden widths (or 'T1'..'T5')
    activation: str = "relu"  # one of ACTIVATIONS
    optimizer: str = "sgd"  # one of OPTIMIZERS, with torch.optim's default arguments
    lr: float = 0.01  # learning rate, > 0
    seed: int = 42  # initial weights and batch order derive from it alone
    batch_size: int = 64  # examples per step; the last batch of an epoch may be smaller
    max_epochs: int = 20  # upper bound on epochs
    patience: int = 3  # stop after this many epochs without a better evaluation accuracy
    # The data's shape. Left out of `to_dict` (and so of trial keys) at FashionMNIST's values,
    # so every FashionMNIST trial keeps the key it had before other data existed.
    n_inputs: int = N_INPUTS  # input values per example (H * W, or D features)
    n_classes: int = N_CLASSES  # logits out

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise fields once, at construction
        set_(self, "topology", parse_topology(self.topology))
        set_(self, "activation", _canonical(self.activation, ACTIVATIONS, "activation"))
        set_(self, "optimizer", _canonical(self.optimizer, OPTIMIZERS, "optimizer"))
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float):
            raise UserError(f"lr must be a number, got lr={self.lr!r}")
        set_(self, "lr", float(self.lr))
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr must be > 0, got lr={self.lr}")
        checks = (("seed", 0), ("batch_size", 1), ("max_epochs", 1), ("patience", 1),
                  ("n_inputs", 1), ("n_classes", 2))  # fmt: skip
        for name, low in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"{name} must be an integer >= {low}, got {name}={value!r}")
        if self.seed > MAX_SEED:
            raise UserError(f"seed must be an integer in 0..2**63-1, got seed={self.seed}")
        if (self.n_inputs, self.n_classes) != (N_INPUTS, N_CLASSES):
            _check_buildable(self.topology, self.n_inputs, self.n_classes)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.topology, self.n_classes)

    @property
    def topology_label(self) -> str:
        """'T4[784-256-128-64-10]', or just the layer list for shapes the paper did not name."""
        layers = "-".join(map(str, self.layer_sizes))
        name = topology_name(self.topology)
        return f"{name}[{layers}]" if name else f"[{layers}]"

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["topology"] = list(self.topology)
        for name, default in (("n_inputs", N_INPUTS), ("n_classes", N_CLASSES)):
            if d[name] == default:
                del d[name]  # FashionMNIST's shape: keys as before other data existed
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown configuration key(s) {unknown}; expected {sorted(known)}")
        return cls(**d)

    def __str__(self) -> str:
        return (
            f"{self.topology_label} {self.optimizer} lr={self.lr:g} {self.activation} "
            f"seed={self.seed} bs={self.batch_size} epochs={self.max_epochs} "
            f"patience={self.patience}"
        )
