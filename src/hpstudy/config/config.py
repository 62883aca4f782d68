"""Configurations as frozen values: `Config`, validated and normalised at construction.

    >>> cfg = Config(topology="T4", optimizer="adam", lr=0.005)
    >>> print(cfg)
    T4[784-256-128-64-10] adam lr=0.005 relu seed=42 bs=64 epochs=20 patience=3
    >>> cfg.layer_sizes
    (784, 256, 128, 64, 10)

A configuration is hashable and printable as one line; a trial's identity is its configuration
(seed included) and split (see `hpstudy.storage.keys`). The names a field may take (topologies,
activations, optimizers, ...) and the limits on what can be built are `hpstudy.config.choices`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from hpstudy.config.choices import (
    ACTIVATIONS,
    AUGMENTATIONS,
    KERNEL_SIZES,
    MAX_CONVS_PER_BLOCK,
    MAX_LAYER_WEIGHTS,
    MAX_SEED,
    N_CLASSES,
    N_INPUTS,
    OPTIMIZERS,
    SCHEDULES,
    TOPOLOGIES,
    canonical_name,
    check_buildable,
    parse_conv,
    parse_topology,
    topology_name,
)
from hpstudy.errors import UserError


@dataclass(frozen=True)
class ConvLayer:
    """One convolution of a CNN: channels in and out, the side of its (square, "same"-padded)
    input and output, and whether a 2x2 max-pooling follows it."""

    c_in: int
    c_out: int
    side: int
    pool: bool


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
    # The examples' shape as the data holds it, (H, W) images or (D,) features, where it is not
    # the one n_inputs implies (`implied_shape`; normalised to None then): convolutions and
    # augmentation need a square image. `example_shape` is the shape either way. Left out of
    # `to_dict` where it is None or changes nothing (an MLP without augmentation), so trial
    # keys stay as they were.
    input_shape: tuple[int, ...] | None = None
    # The wider space. Each is left out of `to_dict` (and trial keys) at its default, so a
    # configuration of the paper's space keeps the key it had before these existed. Optimizer
    # arguments that the optimizer does not take are reset to their defaults (Adam ignores
    # momentum), so equal training runs are one configuration.
    momentum: float = 0.0  # SGD's momentum, in [0, 1)
    nesterov: bool = False  # SGD's Nesterov momentum (needs momentum > 0)
    weight_decay: float = 0.0  # L2 penalty as torch.optim adds it to the gradient, >= 0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's, each in [0, 1)
    schedule: str = "constant"  # one of SCHEDULES, stepped per epoch
    dropout: float = 0.0  # after each dense hidden activation (MLP or CNN), in [0, 1)
    # CNN: channels of each convolution block (conv, [batch norm], activation, 2x2 max-pool)
    # before the dense hidden layers of `topology`; () is an MLP. Inputs are square images.
    conv: tuple[int, ...] = ()
    kernel_size: int = 3  # one of KERNEL_SIZES, "same" padding
    batch_norm: bool = False  # BatchNorm2d after each convolution
    convs_per_block: int = 1  # conv, [batch norm], activation, this many times, then the pool
    augment: str = "none"  # one of AUGMENTATIONS, of the training images (MLP or CNN)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise fields once, at construction
        set_(self, "topology", parse_topology(self.topology))
        set_(self, "activation", canonical_name(self.activation, ACTIVATIONS, "activation"))
        set_(self, "optimizer", canonical_name(self.optimizer, OPTIMIZERS, "optimizer"))
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float):
            raise UserError(f"lr must be a number, got lr={self.lr!r}")
        set_(self, "lr", _as_float("lr", self.lr))
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
        _check_input_shape(self)
        if (self.n_inputs, self.n_classes) != (N_INPUTS, N_CLASSES):
            check_buildable(self.topology, self.n_inputs, self.n_classes)
        _check_wide(self)
        _check_conv(self)
        _check_augment(self)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.topology, self.n_classes)

    @property
    def topology_label(self) -> str:
        """'T4[784-256-128-64-10]', or just the layer list for shapes the paper did not name
        (a CNN's dense layers start at its flattened convolution output: 'T1[3136-128-10]')."""
        layers = "-".join(map(str, self.dense_sizes))
        name = topology_name(self.topology)
        return f"{name}[{layers}]" if name else f"[{layers}]"

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    @property
    def is_cnn(self) -> bool:
        return bool(self.conv)

    @property
    def needs_image(self) -> bool:
        """Whether training reads the inputs as square images (convolutions, augmentation)."""
        return bool(self.conv) or self.augment != "none"

    @property
    def is_square_image(self) -> bool:
        """Whether the inputs are (H, W) images with H == W (what conv and augment need)."""
        shape = self.example_shape
        return len(shape) == 2 and shape[0] == shape[1]

    @property
    def example_shape(self) -> tuple[int, ...]:
        """One example's shape: (H, W) or (D,)."""
        return self.input_shape or implied_shape(self.n_inputs)

    @property
    def image_side(self) -> int:
        """The side of a square input image (28 for FashionMNIST)."""
        return self.example_shape[0] if self.is_square_image else math.isqrt(self.n_inputs)

    @property
    def dense_sizes(self) -> tuple[int, ...]:
        """The dense layers' sizes: layer_sizes for an MLP; for a CNN the flattened output of
        the last 2x2 pooling (channels x side x side), then the hidden widths and the classes."""
        if not self.conv:
            return self.layer_sizes
        side = self.image_side >> len(self.conv)  # each pooling floors: 28 -> 14 -> 7 -> 3
        return (self.conv[-1] * side * side, *self.topology, self.n_classes)

    @property
    def conv_layers(self) -> tuple[ConvLayer, ...]:
        """Every convolution of a CNN in order, with its input side and whether a 2x2 pooling
        follows it (the last of each block); () for an MLP."""
        layers, c_in, side = [], 1, self.image_side
        for width in self.conv:
            for i in range(self.convs_per_block):
                layers.append(ConvLayer(c_in, width, side, i == self.convs_per_block - 1))
                c_in = width
            side //= 2
        return tuple(layers)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["topology"] = list(self.topology)
        for name in _OMITTED_AT_DEFAULT:
            if d[name] == _DEFAULTS[name]:
                del d[name]  # keys as before other data and the wider space existed
        if self.input_shape is None or not self.needs_image:
            del d["input_shape"]  # the shape matters to convolutions and augmentation only
        for name in ("betas", "conv", "input_shape"):
            if name in d:
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown configuration key(s) {unknown}; expected {sorted(known)}")
        return cls(**d)

    def __str__(self) -> str:
        return self.text()

    def text(self, *, seed: bool = True) -> str:
        """One line: 'T4[784-256-128-64-10] sgd lr=0.01 relu seed=42 bs=64 ...', with the
        wider fields that are not at their defaults; `seed=False` leaves the seed out (a
        configuration over several seeds)."""
        wide = " ".join(
            f"{name}={_value_text(getattr(self, name))}"
            for name in _WIDE_FIELDS
            if getattr(self, name) != _DEFAULTS[name]
        )
        conv = f"conv{list(self.conv)} " if self.conv else ""
        seed_text = f"seed={self.seed} " if seed else ""
        return (
            f"{conv}{self.topology_label} {self.optimizer} lr={self.lr:g} {self.activation} "
            f"{seed_text}bs={self.batch_size} epochs={self.max_epochs} "
            f"patience={self.patience}" + (f" {wide}" if wide else "")
        )


def _value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ",".join(_value_text(v) for v in value) + ")"
    return str(value)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}
_WIDE_FIELDS = (
    "momentum",
    "nesterov",
    "weight_decay",
    "betas",
    "schedule",
    "dropout",
    "kernel_size",
    "batch_norm",
    "convs_per_block",
    "augment",
)  # printed by __str__ when not at their defaults
_OMITTED_AT_DEFAULT = ("n_inputs", "n_classes", "conv", *_WIDE_FIELDS)
# How a model is trained beyond optimizer, learning rate and batch (the model card's "other
# training settings"): the wide fields less the convolutions' shape.
_SHAPE_FIELDS = ("kernel_size", "batch_norm", "convs_per_block")
TRAINING_FIELDS = tuple(f for f in _WIDE_FIELDS if f not in _SHAPE_FIELDS)


def implied_shape(n_inputs: int) -> tuple[int, ...]:
    """The shape a bare input count stands for: a square image where it is a square (784:
    28 x 28, as FashionMNIST and every run before shapes travelled), else flat features."""
    side = math.isqrt(n_inputs)
    return (side, side) if side * side == n_inputs else (n_inputs,)


def _check_input_shape(config: Config) -> None:
    """Normalise `input_shape` to a tuple of one or two positive integers holding n_inputs."""
    shape = config.input_shape
    if shape is None:
        return
    if (
        not isinstance(shape, list | tuple)
        or len(shape) not in (1, 2)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise UserError(f"input_shape must be [H, W] or [D] of positive integers, got "
                        f"input_shape={shape!r}")  # fmt: skip
    if math.prod(shape) != config.n_inputs:
        raise UserError(f"input_shape {list(shape)} holds {math.prod(shape)} values but "
                        f"n_inputs={config.n_inputs}; they must agree")  # fmt: skip
    shape = tuple(shape)
    object.__setattr__(config, "input_shape", None if shape == implied_shape(config.n_inputs)
                       else shape)  # fmt: skip


def _shape_text(shape: tuple[int, ...]) -> str:
    """'16x4 images' or '64 features'."""
    return "x".join(map(str, shape)) + " images" if len(shape) == 2 else f"{shape[0]} features"


def _as_float(name: str, value: int | float) -> float:
    """`value` as a float; an integer too large for one (10**400, from Python or an edited
    file) is a UserError naming the field, not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        raise UserError(f"{name} must be a finite number, got an integer too large for a float "
                        f"({value.bit_length()} bits)") from None  # fmt: skip


def _unit_interval(name: str, value) -> float:
    """A float in [0, 1), or a UserError naming the key and that domain."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise UserError(f"{name} must be a number in [0, 1), got {name}={value!r}")
    return float(value)


def _check_wide(config: Config) -> None:
    """Validate and normalise the optimizer, schedule and dropout fields (see Config)."""
    set_ = object.__setattr__
    set_(config, "momentum", _unit_interval("momentum", config.momentum))
    set_(config, "dropout", _unit_interval("dropout", config.dropout))
    wd = config.weight_decay
    if isinstance(wd, bool) or not isinstance(wd, int | float):
        raise UserError(f"weight_decay must be a number >= 0, got weight_decay={wd!r}")
    wd = _as_float("weight_decay", wd)
    if not (math.isfinite(wd) and wd >= 0):
        raise UserError(f"weight_decay must be a number >= 0, got weight_decay={wd!r}")
    set_(config, "weight_decay", wd)
    if not isinstance(config.nesterov, bool):
        raise UserError(f"nesterov must be true or false, got nesterov={config.nesterov!r}")
    betas = config.betas
    if not isinstance(betas, list | tuple) or len(betas) != 2:
        raise UserError(f"betas must be two numbers in [0, 1), got betas={betas!r}")
    set_(config, "betas", tuple(_unit_interval("betas", b) for b in betas))
    set_(config, "schedule", canonical_name(config.schedule, SCHEDULES, "schedule"))
    if config.optimizer != "sgd":  # arguments the optimizer does not take: one configuration
        set_(config, "momentum", 0.0)
        set_(config, "nesterov", False)
    if config.optimizer != "adam":
        set_(config, "betas", _DEFAULTS["betas"])
    if config.nesterov and config.momentum == 0:
        raise UserError("nesterov = true needs momentum > 0 (as torch.optim.SGD does), got "
                        "momentum=0; set a momentum or nesterov = false")  # fmt: skip


def _check_conv(config: Config) -> None:
    """Validate the CNN fields: positive channels, a known kernel, square inputs that survive
    a 2x2 pooling per block."""
    set_ = object.__setattr__
    conv = parse_conv(config.conv)
    set_(config, "conv", conv)
    if config.kernel_size not in KERNEL_SIZES or isinstance(config.kernel_size, bool):
        raise UserError(f"kernel_size must be one of {list(KERNEL_SIZES)}, got "
                        f"kernel_size={config.kernel_size!r}")  # fmt: skip
    if not isinstance(config.batch_norm, bool):
        raise UserError(f"batch_norm must be true or false, got batch_norm={config.batch_norm!r}")
    depth, most = config.convs_per_block, MAX_CONVS_PER_BLOCK
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= most:
        raise UserError(f"convs_per_block must be an integer in 1..{MAX_CONVS_PER_BLOCK}, got "
                        f"convs_per_block={depth!r}")  # fmt: skip
    if not conv:
        if config.batch_norm:
            raise UserError("batch_norm = true needs convolution blocks (conv = [...])")
        if depth > 1:
            raise UserError(f"convs_per_block = {depth} needs convolution blocks (conv = [...])")
        return
    if not config.is_square_image:
        raise UserError(f"conv needs square images; the data holds "
                        f"{_shape_text(config.example_shape)}: use an MLP (no conv) for feature "
                        "data or images that are not square")  # fmt: skip
    side = config.image_side
    if side >> len(conv) < 1:
        raise UserError(f"{len(conv)} convolution blocks halve a {side}x{side} image below 1x1; "
                        f"use at most {side.bit_length() - 1}")  # fmt: skip
    for layer in config.conv_layers:  # the layer-size rule, convolutions and their dense input
        n_weights = layer.c_in * layer.c_out * config.kernel_size**2
        if n_weights > MAX_LAYER_WEIGHTS:
            raise UserError(f"convolution {layer.c_in}->{layer.c_out} channels of "
                            f"{config.kernel_size}x{config.kernel_size} has {n_weights:,} "
                            f"weights; at most {MAX_LAYER_WEIGHTS:,} per layer (400 MB in "
                            "float32): use fewer channels")  # fmt: skip
    check_buildable(config.dense_sizes[1:-1], config.dense_sizes[0], config.n_classes)


def _check_augment(config: Config) -> None:
    """Validate the augmentation: a known one, of square images."""
    object.__setattr__(
        config, "augment", canonical_name(config.augment, AUGMENTATIONS, "augmentation")
    )
    if config.augment != "none" and not config.is_square_image:
        raise UserError(f"augment = {config.augment!r} flips and shifts square images; the data "
                        f"holds {_shape_text(config.example_shape)}: use augment = 'none' for "
                        "feature data or images that are not square")  # fmt: skip


# Learning rates from which Adam and RMSprop are chaotic here: a rounding-level difference
# (1e-15 relative, in float64) grows about a thousandfold per epoch instead of staying at the
# rounding level (measured on T4, see docs/design.md, "The contract"). No two implementations,
# nor one implementation with its batch rows in another order, agree on their trajectories.
CHAOTIC_LR = {"adam": 0.05, "rmsprop": 0.01}


def is_chaotic(config: Config) -> bool:
    """Whether `config`'s training amplifies rounding differences (see CHAOTIC_LR)."""
    return config.lr >= CHAOTIC_LR.get(config.optimizer, float("inf"))
