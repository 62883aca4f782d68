"""Every configuration a study can ask for, built once its data's shape is known and before a run
folder exists, so a value the data cannot train is refused with the file and the key.

    >>> check_configs(study.with_data_shape(64, 10, (16, 4)))
    UserError: s.toml: space.conv[0]: conv needs square images; the data holds 16x4 images: ...

Each value is built alone (on the study's start, or the first value of every other factor) so
the error names the key at fault; then, when the space is small enough, every combination, since
values fine alone may not go together. A staged study's stage must train one distinct model per
value under every configuration it may start from (momentum under Adam trains one model three
times, and the three rows would share a trial key).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from hpstudy.config.config import Config
from hpstudy.config.factors import FACTORS, Range
from hpstudy.config.study import ProtocolKind, Study
from hpstudy.errors import UserError

MAX_COMBINATIONS = 4096  # beyond this many, values are checked one at a time only


def check_configs(study: Study) -> None:
    """Build the study's configurations with its data shape; a `UserError` names the file and
    the key of the first that cannot be built."""
    base, entries = _entries(study)
    if study.protocol in _STAGED:
        start_keys = {f: f"start.{f}" for f in base}
        _build(study, base, start_keys)
    else:  # the base is the first value of each factor
        start_keys = {f: f"{where}[0]" for f, _, where in entries}
    for factor, values, where in entries:
        for i, value in enumerate(values):
            keys = start_keys | {factor: f"{where}[{i}]"}
            _build(study, base | {factor: value}, keys)
    if math.prod(len(values) for _, values, _ in entries) <= MAX_COMBINATIONS:
        for combo in itertools.product(*(values for _, values, _ in entries)):
            chosen = {f: v for (f, _, _), v in zip(entries, combo, strict=True)}
            keys = start_keys | {
                f: f"{where}[{values.index(v)}]"
                for (f, values, where), v in zip(entries, combo, strict=True)
            }
            _build(study, base | chosen, keys)  # fmt: skip
    if study.protocol in _STAGED:
        _check_distinct(study, base, entries)


_STAGED = (ProtocolKind.STAGED, ProtocolKind.REPLICATE)


def _entries(study: Study) -> tuple[dict, list[tuple[str, tuple, str]]]:
    """(base values, [(factor, values, key in the file)]) of the study's protocol: a staged
    study's start and stages; a grid's or search's first values and [space] (a range: its
    ends)."""
    if study.protocol in _STAGED:
        entries = [(s.factor, tuple(s.values), f"stages[{i}].values")
                   for i, s in enumerate(study.stages)]  # fmt: skip
        return dict(study.start), entries
    entries = []
    for factor, domain in study.space.items():
        if isinstance(domain, Range):
            kind = int if domain.integer else float
            values = (kind(domain.low), kind(domain.high))
        else:
            values = tuple(domain)
        entries.append((factor, values, f"space.{factor}"))
    return {factor: values[0] for factor, values, _ in entries}, entries


def _build(study: Study, values: dict, keys: dict[str, str]) -> Config:
    """The configuration of `values`, or a UserError naming the key at fault: the one whose
    value, left out, lets the rest build (else every key of the combination)."""
    try:
        return study.config(seed=study.seed, **values)
    except UserError as exc:
        error = exc
    for factor in reversed(list(values)):  # a stage's or later factor's value first
        rest = {f: v for f, v in values.items() if f != factor}
        try:
            study.config(seed=study.seed, **rest)
        except UserError:
            continue
        where = keys.get(factor, factor)
        raise UserError(f"{study.path}: {where}: {error}") from None
    where = ", ".join(f"{keys.get(f, f)} = {_label(f, v)}" for f, v in values.items())
    raise UserError(f"{study.path}: {where}: {error}") from None


def _check_distinct(study: Study, start: dict, entries: list[tuple[str, tuple, str]]) -> None:
    """Refuse a stage whose values train one and the same model under a configuration it may
    start from (the start with any values of the stages before it)."""
    for i, (factor, values, where) in enumerate(entries):
        before = entries[:i]
        n_bases = math.prod(len(v) for _, v, _ in before)
        combos = itertools.product(*(v for _, v, _ in before)) if n_bases <= MAX_COMBINATIONS \
            else [tuple(v[0] for _, v, _ in before)]  # fmt: skip
        for combo in combos:
            base = start | {f: v for (f, _, _), v in zip(before, combo, strict=True)}
            seen: dict[Config, Any] = {}
            for value in values:
                config = _build(study, base | {factor: value}, {factor: where})
                if config in seen:
                    _refuse_same(study, where, factor, (seen[config], value), config, before)
                seen[config] = value


def _refuse_same(study, where, factor, pair, config, before) -> None:
    a, b = (_label(factor, v) for v in pair)
    spec = FACTORS.get(factor)
    if spec is not None and not spec.applies(config.optimizer):
        why = f"{config.optimizer} ignores {factor}"
        chooser = [w for f, _, w in before if f == "optimizer"]
        if chooser:
            why += f", and {chooser[0].removesuffix('.values')} may choose {config.optimizer}"
        fix = (f"vary {factor} only where every configuration uses "
               f"{' or '.join(spec.optimizers)}, or drop the stage")  # fmt: skip
    else:
        why = "the configuration leaves that value without effect"
        fix = "give values that train different models, or drop the stage"
    raise UserError(f"{study.path}: {where}: {factor} = {a} and {b} train one and the same "
                    f"model ({why}); {fix}")  # fmt: skip


def _label(factor: str, value: Any) -> str:
    try:
        return FACTORS[factor].label(value)
    except Exception:  # a label is for messages; an odd value must not hide the real error
        return repr(value)
