"""The searched factors, declared once: name, values, label, title, Optuna param.

    >>> FACTORS["lr"].label(0.005), FACTORS["topology"].label((256, 128, 64))   # '0.005', 'T4'
    >>> FACTORS["topology"].parse("T4")          # (256, 128, 64), checked like Config checks it
    >>> factors_of(config)                        # ((256, 128, 64), 'adam', 0.005, 'relu')
    >>> config_text(config)                       # 'T4, Adam, 0.005, ReLU'
    >>> Range(1e-4, 0.3, log=True)                # a search's continuous lr: one Optuna float
    >>> config_values({"depth": 2, "width": 512}) # {'topology': (512, 512)}

Everything that names a factor asks this module: the study-file parser (`[space]`, `[start]`,
stages), the store's Optuna params and distributions, the tables' labels and titles, the report's
main effects. A factor is a field of `Config` (which the engine reads); adding one is a `Factor`
here plus, if the engine does not yet know the field, the engine. `PAPER_FACTORS` are the four
the paper varies: a study's space always has them (the paper's values by default); another
factor is searched only when a study's `[space]` lists it.

A space maps a factor to its domain: a tuple of values (every protocol), or, in a search, a
`Range` for the factors that take one (`Factor.ranged`: lr, momentum, weight decay, dropout,
depth, width), which Optuna samples as a float or integer distribution; a range's param is the
value itself. `depth` and `width` are the one pair of factors that are not `Config` fields: they
stand for `topology = (width,) * depth` (`config_values`), so a search can sample the shape of
an MLP as two numbers while every trial still holds a topology.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hpstudy.config.choices import (
    ACTIVATIONS,
    MAX_HIDDEN_LAYERS,
    OPTIMIZERS,
    TOPOLOGIES,
    parse_conv,
    parse_topology,
    topology_name,
)
from hpstudy.config.config import Config
from hpstudy.errors import UserError


@dataclass(frozen=True)
class Range:
    """An interval a search samples (`lr = { low = 1e-4, high = 0.3, log = true }`), ends
    included; `log`: uniform in log space; `integer`: whole numbers (depth, width)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __contains__(self, value: Any) -> bool:
        return self.low <= value <= self.high

    @property
    def size(self) -> float:
        """How many values it holds: high - low + 1 integers, or infinitely many floats."""
        return self.high - self.low + 1 if self.integer else math.inf

    def text(self, label: Callable[[Any], str] = str) -> str:
        """'0.0001..0.3 (log)'."""
        return f"{label(self.low)}..{label(self.high)}" + (" (log)" if self.log else "")


Domain = tuple | Range  # what a space holds per factor


@dataclass(frozen=True)
class Factor:
    """One hyperparameter a study can vary."""

    name: str  # the Config field, the study-file key and the Optuna param name
    title: str  # a table column: 'Learning rate'
    noun: str  # in sentences: 'learning rate'
    default: tuple  # values when a study's [space] leaves it out ((): not searched by default)
    label: Callable[[Any], str]  # how a value prints: 'T4', 'Adam', '0.005', 'LeakyReLU'
    param: Callable[[Any], Any] = lambda value: value  # the Optuna param (JSON-able, hashable)
    ranged: type | None = None  # float or int: a search may give a Range instead of values
    # The optimizers it means anything to (momentum: SGD's; (): all). With another optimizer
    # Config resets it to its default, and a trial has no param for it (Optuna's conditional
    # params: the search samples it only where it applies).
    optimizers: tuple[str, ...] = ()
    # How a configuration's one-line label names the value ('wd 0.0001'); "" prints the value
    # alone, for the paper's factors and values that say what they are ('cosine').
    tag: str = ""

    def tagged(self, value: Any) -> str:
        """The value as a configuration's label shows it: 'wd 0.0001', 'Adam'."""
        return f"{self.tag} {self.label(value)}" if self.tag else self.label(value)

    def applies(self, optimizer: str) -> bool:
        """Whether the factor means anything to a configuration with this optimizer."""
        return not self.optimizers or optimizer in self.optimizers

    def parse(self, value: Any) -> Any:
        """The canonical value, checked as Config checks it (UserError names the problem)."""
        if self.name == "topology":
            if isinstance(value, int | float | bool):
                raise UserError(f"expected 'T1'..'T5' or a list of widths, got {value!r}")
            return parse_topology(value)
        if self.name in SHAPE_FACTORS:
            return _parse_shape(self.name, value)
        if self.name == "conv":  # the data's image decides the rest (config.feasible)
            return parse_conv(value)
        # A value some other field must allow (betas are Adam's): check it in such a Config.
        context = _PARSE_CONTEXT.get(self.name, {})
        return getattr(Config(**context, **{self.name: value}), self.name)


_PARSE_CONTEXT = {
    "nesterov": {"momentum": 0.9},
    "betas": {"optimizer": "adam"},
    "batch_norm": {"conv": (8,)},
    "convs_per_block": {"conv": (8,)},
}


SHAPE_FACTORS = ("depth", "width")  # not Config fields: topology = (width,) * depth


def _parse_shape(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be an integer >= 1, got {name}={value!r}")
    if name == "depth" and value > MAX_HIDDEN_LAYERS:
        raise UserError(f"depth must be at most {MAX_HIDDEN_LAYERS} hidden layers, got "
                        f"depth={value}")  # fmt: skip
    if name == "width":
        parse_topology((value, value))  # a layer of width x width must be buildable
    return value


def _number(value) -> str:
    return f"{value:g}"


def _widths(value) -> str:
    return "-".join(map(str, value)) or "none"


def _topology_label(value) -> str:
    return topology_name(tuple(value)) or "-".join(map(str, value))


FACTORS: dict[str, Factor] = {
    f.name: f
    for f in (
        Factor("topology", "Topology", "topology", tuple(TOPOLOGIES), _topology_label,
               param=_topology_label),
        # The topology as two numbers, (width,) * depth: a search samples them as integers.
        Factor("depth", "Depth", "number of hidden layers", (), str, ranged=int),
        Factor("width", "Width", "hidden-layer width", (), str, ranged=int),
        Factor("optimizer", "Optimizer", "optimizer", tuple(OPTIMIZERS), OPTIMIZERS.__getitem__),
        Factor("lr", "Learning rate", "learning rate", (0.001, 0.005, 0.01, 0.05, 0.1),
               lambda v: f"{v:g}", ranged=float),
        Factor("activation", "Activation", "activation", tuple(ACTIVATIONS),
               ACTIVATIONS.__getitem__),
        # The wider space: searched only when a study's [space] lists them.
        Factor("momentum", "Momentum", "momentum", (), _number, ranged=float, optimizers=("sgd",),
               tag="momentum"),
        Factor("nesterov", "Nesterov", "Nesterov momentum", (), lambda v: "yes" if v else "no",
               optimizers=("sgd",), tag="nesterov"),
        Factor("weight_decay", "Weight decay", "weight decay", (), _number, ranged=float,
               tag="wd"),
        Factor("betas", "Adam betas", "Adam's betas", (),
               lambda v: ",".join(map(_number, v)), param=lambda v: ",".join(map(_number, v)),
               optimizers=("adam",), tag="betas"),
        Factor("schedule", "LR schedule", "learning-rate schedule", (), str),
        Factor("dropout", "Dropout", "dropout", (), _number, ranged=float, tag="dropout"),
        Factor("batch_size", "Batch size", "batch size", (), str, tag="bs"),
        # CNNs: convolution blocks before the dense layers.
        Factor("conv", "Convolutions", "convolution channels", (), _widths, param=_widths,
               tag="conv"),
        Factor("kernel_size", "Kernel", "kernel size", (), str, tag="k"),
        Factor("batch_norm", "Batch norm", "batch normalisation", (),
               lambda v: "yes" if v else "no", tag="BN"),
        Factor("convs_per_block", "Convs per block", "convolutions per block", (), str,
               tag="convs"),
        # Images, MLP or CNN: random flips and shifts of the training images.
        Factor("augment", "Augmentation", "training-image augmentation", (), str, tag="aug"),
    )
}  # fmt: skip
PAPER_FACTORS = ("topology", "optimizer", "lr", "activation")


def factor_label(name: str, value: Any) -> str:
    """How a factor value is printed in tables: 'T4', 'Adam', '0.005', 'LeakyReLU'."""
    return FACTORS[name].label(value)


def factor_title(name: str) -> str:
    return FACTORS[name].title if name in FACTORS else name


def ranged_names() -> tuple[str, ...]:
    """The factors that take a range in a search's [space]."""
    return tuple(name for name, f in FACTORS.items() if f.ranged)


def searched(space: dict[str, Domain]) -> tuple[str, ...]:
    """The factors a study's space varies, in declaration order."""
    return tuple(name for name in FACTORS if name in space)


def shown(space: dict[str, Domain]) -> tuple[str, ...]:
    """The Config fields behind `searched(space)`: depth and width show as their topology."""
    names = ("topology" if name in SHAPE_FACTORS else name for name in searched(space))
    return tuple(dict.fromkeys(names))


def has_ranges(space: dict[str, Domain]) -> bool:
    return any(isinstance(domain, Range) for domain in space.values())


def space_size(space: dict[str, Domain]) -> float:
    """How many configurations the space holds (math.inf with a float range)."""
    return math.prod(d.size if isinstance(d, Range) else len(d) for d in space.values())


def topologies(space: dict[str, Domain]) -> list[tuple[int, ...]]:
    """The space's topologies, or with depth and width, its deepest and widest."""
    if "topology" in space:
        return list(space["topology"])
    depth, width = (space[n] for n in SHAPE_FACTORS)
    return [(max(_ends(width)),) * max(_ends(depth))]


def _ends(domain: Domain) -> tuple:
    return (domain.low, domain.high) if isinstance(domain, Range) else domain


def config_values(values: dict[str, Any]) -> dict[str, Any]:
    """Factor values as Config fields: depth and width become topology = (width,) * depth."""
    if not any(name in values for name in SHAPE_FACTORS):
        return values
    missing = [name for name in SHAPE_FACTORS if name not in values]
    if missing or "topology" in values:
        raise UserError("depth and width go together, instead of topology; got "
                        f"{sorted(values)}")  # fmt: skip
    rest = {k: v for k, v in values.items() if k not in SHAPE_FACTORS}
    return rest | {"topology": (int(values["width"]),) * int(values["depth"])}


def value_of(config: Config, name: str) -> Any:
    """A factor's value in a configuration (depth and width read from its topology)."""
    if name == "depth":
        return len(config.topology)
    if name == "width":
        return config.topology[0]
    return getattr(config, name)


def factors_of(config: Config, names: Iterable[str] = PAPER_FACTORS) -> tuple:
    """A configuration without its seed, as a hashable tuple of factor values."""
    return tuple(_hashable(value_of(config, name)) for name in names)


def factors_key(values: dict, names: Iterable[str] = PAPER_FACTORS) -> tuple:
    """The same tuple from a dict of factor values."""
    return tuple(_hashable(values[name]) for name in names)


def config_label(config: Config, names: Iterable[str] = PAPER_FACTORS, *, sep: str = " ") -> str:
    """'T4 Adam 0.005 ReLU' (and any other factor the study searches that applies to it, named:
    'T4 SGD 0.01 ReLU momentum 0.9 wd 0.0001 cosine'; no momentum for Adam). The one label of a
    configuration in every table, verdict and figure."""
    return sep.join(FACTORS[f].tagged(value_of(config, f)) for f in names
                    if FACTORS[f].applies(config.optimizer))  # fmt: skip


def config_text(config: Config, names: Iterable[str] = PAPER_FACTORS) -> str:
    """'T4, Adam, 0.005, ReLU': `config_label` in a sentence."""
    return config_label(config, names, sep=", ")


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value
