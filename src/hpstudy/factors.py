"""The searched factors, declared once: name, values, label, title, Optuna param.

    >>> FACTORS["lr"].label(0.005), FACTORS["topology"].label((256, 128, 64))   # '0.005', 'T4'
    >>> FACTORS["topology"].parse("T4")          # (256, 128, 64), checked like Config checks it
    >>> factors_of(config)                        # ((256, 128, 64), 'adam', 0.005, 'relu')
    >>> config_text(config)                       # 'T4, Adam, 0.005, ReLU'

Everything that names a factor asks this module: the study-file parser (`[space]`, `[start]`,
stages), the store's Optuna params and distributions, the tables' labels and titles, the report's
main effects. A factor is a field of `Config` (which the engine reads); adding one is a `Factor`
here plus, if the engine does not yet know the field, the engine. `PAPER_FACTORS` are the four
the paper varies: a study's space always has them (the paper's values by default); another
factor is searched only when a study's `[space]` lists it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hpstudy.errors import UserError
from hpstudy.space import ACTIVATIONS, OPTIMIZERS, TOPOLOGIES, Config, parse_topology, topology_name


@dataclass(frozen=True)
class Factor:
    """One hyperparameter a study can vary."""

    name: str  # the Config field, the study-file key and the Optuna param name
    title: str  # a table column: 'Learning rate'
    noun: str  # in sentences: 'learning rate'
    default: tuple  # values when a study's [space] leaves it out ((): not searched by default)
    label: Callable[[Any], str]  # how a value prints: 'T4', 'Adam', '0.005', 'LeakyReLU'
    param: Callable[[Any], Any] = lambda value: value  # the Optuna param (JSON-able, hashable)

    def parse(self, value: Any) -> Any:
        """The canonical value, checked as Config checks it (UserError names the problem)."""
        if self.name == "topology":
            if isinstance(value, int | float | bool):
                raise UserError(f"expected 'T1'..'T5' or a list of widths, got {value!r}")
            return parse_topology(value)
        # A value some other field must allow (betas are Adam's): check it in such a Config.
        context = _PARSE_CONTEXT.get(self.name, {})
        return getattr(Config(**context, **{self.name: value}), self.name)


_PARSE_CONTEXT = {
    "nesterov": {"momentum": 0.9},
    "betas": {"optimizer": "adam"},
    "batch_norm": {"conv": (8,)},
}


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
        Factor("optimizer", "Optimizer", "optimizer", tuple(OPTIMIZERS), OPTIMIZERS.__getitem__),
        Factor("lr", "Learning rate", "learning rate", (0.001, 0.005, 0.01, 0.05, 0.1),
               lambda v: f"{v:g}"),
        Factor("activation", "Activation", "activation", tuple(ACTIVATIONS),
               ACTIVATIONS.__getitem__),
        # The wider space: searched only when a study's [space] lists them.
        Factor("momentum", "Momentum", "momentum", (), _number),
        Factor("nesterov", "Nesterov", "Nesterov momentum", (), lambda v: "yes" if v else "no"),
        Factor("weight_decay", "Weight decay", "weight decay", (), _number),
        Factor("betas", "Adam betas", "Adam's betas", (),
               lambda v: ",".join(map(_number, v)), param=lambda v: ",".join(map(_number, v))),
        Factor("schedule", "LR schedule", "learning-rate schedule", (), str),
        Factor("dropout", "Dropout", "dropout", (), _number),
        Factor("batch_size", "Batch size", "batch size", (), str),
        # CNNs: convolution blocks before the dense layers.
        Factor("conv", "Convolutions", "convolution channels", (), _widths, param=_widths),
        Factor("kernel_size", "Kernel", "kernel size", (), str),
        Factor("batch_norm", "Batch norm", "batch normalisation", (),
               lambda v: "yes" if v else "no"),
    )
}  # fmt: skip
PAPER_FACTORS = ("topology", "optimizer", "lr", "activation")


def factor_label(name: str, value: Any) -> str:
    """How a factor value is printed in tables: 'T4', 'Adam', '0.005', 'LeakyReLU'."""
    return FACTORS[name].label(value)


def factor_title(name: str) -> str:
    return FACTORS[name].title if name in FACTORS else name


def searched(space: dict[str, tuple]) -> tuple[str, ...]:
    """The factors a study's space varies, in declaration order."""
    return tuple(name for name in FACTORS if name in space)


def factors_of(config: Config, names: Iterable[str] = PAPER_FACTORS) -> tuple:
    """A configuration without its seed, as a hashable tuple of factor values."""
    return tuple(_hashable(getattr(config, name)) for name in names)


def factors_key(values: dict, names: Iterable[str] = PAPER_FACTORS) -> tuple:
    """The same tuple from a dict of factor values."""
    return tuple(_hashable(values[name]) for name in names)


def config_text(config: Config, names: Iterable[str] = PAPER_FACTORS) -> str:
    """'T4, Adam, 0.005, ReLU'."""
    return ", ".join(factor_label(name, getattr(config, name)) for name in names)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value
