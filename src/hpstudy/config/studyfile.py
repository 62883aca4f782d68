"""Reading a study file: `StudyFileParser` checks the decoded TOML dict and builds a `Study`.

    >>> study = load_study("grid")                    # found, read, decoded and checked
    >>> study = parse_study(text, path)               # the same, for text in hand
    >>> StudyFileParser(path).study({"protokol": 1})  # UserError: studies/grid.toml: protokol: ...

`load_study` asks `hpstudy.config.studyfinder` which file a name or path means, reads it and hands
its text to `parse_study`, which decodes the TOML and hands the dict to the parser. Every mistake
(unknown key, wrong type, impossible value) is a `UserError` naming the key and the file. The
study model (`Study`, `Stage`, the enums and constants) stays in `hpstudy.config.study`; this
module owns the rules of the file format.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any

from hpstudy.config.config import Config
from hpstudy.config.factors import FACTORS, SHAPE_FACTORS, Domain, Range, ranged_names
from hpstudy.config.paths import user_path
from hpstudy.config.study import (
    AUTO,
    CONFIRM_SEED_OFFSET,
    DATA_NAMES,
    DEFAULT_NORMALIZATION,
    EQUIVALENCE_MARGIN,
    SCHEMA_VERSION,
    SLUG,
    SLUG_RULE,
    ProtocolKind,
    Selection,
    Stage,
    Study,
    check_last_seed,
    is_fashion_mnist,
)
from hpstudy.config.studyfinder import resolve_path
from hpstudy.config.tomlreader import TomlReader
from hpstudy.errors import UserError

_TOP_KEYS = {
    "schema_version", "name", "description", "protocol", "selection", "seed", "n_seeds",
    "batch_size", "max_epochs", "patience", "normalization", "validation", "space", "start",
    "stages", "grid", "search", "published", "replicate", "data",
}  # fmt: skip


def _example(raw: dict, kind: type) -> str:
    """A list in place of a range (its ends and middle), for the message that refuses it."""
    low, high = raw.get("low"), raw.get("high")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        return "[...]"
    middle = math.sqrt(low * high) if raw.get("log") is True and low > 0 else (low + high) / 2
    points = dict.fromkeys(round(v) if kind is int else float(f"{v:.3g}")
                           for v in (low, middle, high))  # fmt: skip
    return "[" + ", ".join(f"{v:g}" if kind is float else str(v) for v in points) + "]"


class StudyFileParser(TomlReader):
    """Checks one study file's raw TOML dict; every error names the key and the file."""

    def slug(self, value: Any, key: str, use: str) -> str:
        if not isinstance(value, str) or not SLUG.fullmatch(value):
            raise self.fail(key, f"must be a slug ({SLUG_RULE}; it names {use}), got {value!r}")
        return value

    def factor_value(self, factor: str, value: Any, where: str) -> Any:
        """Canonical value of one factor (checked with the same rules as Config)."""
        try:
            return FACTORS[factor].parse(value)
        except UserError as exc:
            raise self.fail(where, str(exc)) from None

    def space(self, raw: dict, protocol: ProtocolKind) -> dict[str, Domain]:
        table = self.table(raw, "space", set(FACTORS))
        shape = self.shape(table, protocol)
        space: dict[str, Domain] = {}
        for factor in FACTORS:
            if factor not in table and (not FACTORS[factor].default or shape):
                continue  # an optional factor the study does not search (or depth and width)
            values = table.get(factor, list(FACTORS[factor].default))
            if isinstance(values, dict):
                space[factor] = self.range(factor, values, protocol)
                continue
            if not isinstance(values, list | tuple) or not values:
                raise self.fail(f"space.{factor}", f"must be a non-empty list (or, in a search, "
                                f"a range table), got {values!r}")  # fmt: skip
            canon = tuple(
                self.factor_value(factor, v, f"space.{factor}[{i}]") for i, v in enumerate(values)
            )
            if len(set(canon)) != len(canon):
                raise self.fail(f"space.{factor}", f"lists a value twice: {values!r}")
            space[factor] = canon
        self.nesterov(space)
        return space

    def shape(self, table: dict, protocol: ProtocolKind) -> bool:
        """Whether [space] gives depth and width (instead of topology); checks they come as a
        pair, without topology, in a grid or search study."""
        given = [name for name in SHAPE_FACTORS if name in table]
        if not given:
            return False
        where = f"space.{given[0]}"
        if "topology" in table:
            raise self.fail(where, "depth and width stand for topology = (width,) * depth; give "
                            "depth and width or topology, not both")  # fmt: skip
        if len(given) == 1:
            other = next(name for name in SHAPE_FACTORS if name not in table)
            raise self.fail(f"space.{other}", "missing: depth and width go together (topology = "
                            "(width,) * depth)")  # fmt: skip
        if protocol in (ProtocolKind.STAGED, ProtocolKind.REPLICATE):
            raise self.fail(where, f"depth and width are for grid and search studies; a "
                            f"{protocol.value} study lists topologies, such as topology = "
                            "['T1', [512, 512]]")  # fmt: skip
        return True

    def range(self, factor: str, raw: dict, protocol: ProtocolKind) -> Range:
        """`{ low = 1e-4, high = 0.3, log = true }`: a search's interval for one factor, its
        ends checked as single values of that factor are (so the whole interval is allowed)."""
        where, kind = f"space.{factor}", FACTORS[factor].ranged
        if kind is None:
            raise self.fail(where, f"{FACTORS[factor].noun} takes a list of values, not a range; "
                            f"ranges are for {', '.join(ranged_names())}")  # fmt: skip
        if protocol is not ProtocolKind.SEARCH:
            raise self.fail(where, f"a range is for search studies; a {protocol.value} study "
                            "trains every value it names: list the values instead, such as "
                            f"{factor} = {_example(raw, kind)}")  # fmt: skip
        self.no_unknown(raw, {"low", "high", "log"}, where)
        ends = {}
        for end in ("low", "high"):
            value = raw.get(end)
            ok = isinstance(value, kind | int) and not isinstance(value, bool)
            if not ok or not math.isfinite(value):
                need = "an integer" if kind is int else "a finite number"
                raise self.fail(f"{where}.{end}", f"must be {need}, got {value!r}")
            ends[end] = kind(value)
        low, high = ends["low"], ends["high"]
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise self.fail(f"{where}.log", f"must be true or false, got {log!r}")
        if low > high:
            raise self.fail(where, f"low must be <= high, got low={low:g}, high={high:g}")
        if log and low <= 0:
            raise self.fail(f"{where}.low", f"a log range needs low > 0, got low={low:g}; give "
                            "a positive low or log = false")  # fmt: skip
        for end, value in ends.items():  # the factor's domain, as Config states it
            self.factor_value(factor, value, f"{where}.{end}")
        return Range(low, high, log=log, integer=kind is int)

    def nesterov(self, space: dict[str, Domain]) -> None:
        """nesterov = true needs momentum > 0 for SGD: refuse a space where SGD could meet it
        with momentum 0 (every point of a grid is trained; a search may sample it)."""
        if True not in space.get("nesterov", ()) or "sgd" not in space["optimizer"]:
            return
        if "momentum" not in space:
            raise self.fail("space.nesterov", "nesterov = true needs momentum > 0 (as SGD "
                            "does), and this space leaves momentum at 0: add momentum values "
                            "above 0 to [space], such as momentum = [0.9]")  # fmt: skip
        momentum = space["momentum"]
        if 0 in momentum:
            label = FACTORS["momentum"].label
            given = (momentum.text(label) if isinstance(momentum, Range)
                     else ", ".join(map(label, momentum)))  # fmt: skip
            raise self.fail("space.nesterov", f"nesterov = true needs momentum > 0 (as SGD "
                            f"does), but space.momentum includes 0 ({given}): give momentum "
                            "values above 0 (a range with low > 0) or nesterov = "
                            "[false]")  # fmt: skip

    def stages(self, raw: dict, space: dict[str, tuple]) -> tuple[Stage, ...]:
        items = raw.get("stages", [])
        if not isinstance(items, list) or not items:
            raise self.fail("stages", "a staged study needs at least one [[stages]] table")
        stages = []
        for i, item in enumerate(items):
            where = f"stages[{i}]"
            if not isinstance(item, dict):
                raise self.fail(where, f"must be a table, got {item!r}")
            self.no_unknown(item, {"name", "factor", "values", "title", "published"}, where)
            factor = item.get("factor")
            if factor not in space:
                raise self.fail(f"{where}.factor", f"must be one of {tuple(space)} (the factors "
                                f"of [space]), got {factor!r}")  # fmt: skip
            values = item.get("values", list(space[factor]))
            if not isinstance(values, list) or not values:
                raise self.fail(f"{where}.values", f"must be a non-empty list, got {values!r}")
            canon = tuple(
                self.factor_value(factor, v, f"{where}.values[{j}]") for j, v in enumerate(values)
            )
            outside = [v for v in canon if v not in space[factor]]
            if outside:
                raise self.fail(
                    f"{where}.values",
                    f"{outside[0]!r} is not in space.{factor}; "
                    "add it to [space] or remove it from the stage",
                )
            published = item.get("published")
            if published is not None:
                ok = isinstance(published, list) and len(published) == len(canon)
                if not ok or not all(
                    isinstance(p, int | float) and not isinstance(p, bool) and 0 <= p <= 100
                    for p in published
                ):
                    raise self.fail(
                        f"{where}.published",
                        "must list one accuracy in % "
                        f"(0..100) per value ({len(canon)}), got {published!r}",
                    )
                published = tuple(float(p) for p in published)
            name = self.slug(item.get("name", factor), f"{where}.name", "tables/<index>_<name>")
            title = item.get("title", "")
            if not isinstance(title, str):
                raise self.fail(f"{where}.title", f"must be a string, got {title!r}")
            stages.append(Stage(name, factor, canon, title, published))
        return tuple(stages)

    def start(self, raw: dict, space: dict[str, tuple], stages: tuple[Stage, ...]) -> dict:
        table = self.table(raw, "start", set(space))
        start = {}
        for factor in space:
            if factor in table:
                start[factor] = self.factor_value(factor, table[factor], f"start.{factor}")
            elif factor == stages[0].factor:
                start[factor] = stages[0].values[0]
            else:
                raise self.fail(
                    f"start.{factor}",
                    "missing: the first stage needs a value for every factor it does not vary",
                )
        try:  # values fine alone may not go together (nesterov = true, momentum 0)
            Config(**start)
        except UserError as exc:
            raise self.fail("start", str(exc)) from None
        return start

    def replicate(
        self, raw: dict, stages: tuple[Stage, ...], selection: Selection
    ) -> dict[str, Any]:
        """A replicate study's `[replicate]` table (staged_seeds, with_clean,
        equivalence_margin); its stages must carry the paper's numbers."""
        table = self.table(raw, "replicate", {"staged_seeds", "with_clean", "equivalence_margin"})
        with_clean = table.get("with_clean", False)
        if not isinstance(with_clean, bool):
            raise self.fail("replicate.with_clean", f"must be true or false, got {with_clean!r}")
        for i, stage in enumerate(stages):
            if not stage.published:
                raise self.fail(f"stages[{i}].published", "a replicate study re-measures "
                                "published numbers: give one accuracy (%) per value")  # fmt: skip
        if not selection.is_leaky:
            raise self.fail("selection", "a replicate study uses the paper's metric (best test "
                            "accuracy): set selection = 'test'")  # fmt: skip
        margin = self.number(table, "equivalence_margin", "replicate", positive=True,
                             default=EQUIVALENCE_MARGIN)  # fmt: skip
        staged_seeds = self.integer(table, "staged_seeds", 1, low=0, where="replicate")
        return {"staged_seeds": staged_seeds, "with_clean": with_clean,
                "equivalence_margin": margin}  # fmt: skip

    def study(self, raw: dict) -> Study:
        self.no_unknown(raw, _TOP_KEYS)
        version = raw.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise self.fail(
                "schema_version",
                f"this hpstudy reads version {SCHEMA_VERSION}, "
                f"got {version!r}; upgrade hpstudy or rewrite the file",
            )
        name = self.slug(raw.get("name", self.path.stem), "name", "the run folder runs/<name>")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", f"must be a string, got {description!r}")
        protocol = self.choice(raw, "protocol", ProtocolKind)
        selection = self.choice(raw, "selection", Selection)
        data = self.data(raw)
        normalization = self.normalization(raw, data)
        val = self.table(raw, "validation", {"size", "seed"})
        validation_size = self.integer(val, "size", 6000, low=1, where="validation")
        if is_fashion_mnist(data) and validation_size >= 60_000:
            raise self.fail("validation.size", f"must be below 60000, got {validation_size}")
        space = self.space(raw, protocol)
        published = self.table(raw, "published", {"final_accuracy"})
        final = published.get("final_accuracy")
        if final is not None:
            final = self.number(published, "final_accuracy", "published")
        seed, n_seeds = self.integer(raw, "seed", 42, low=0), self.integer(raw, "n_seeds", 1, low=1)
        check_last_seed(seed, n_seeds, f"{self.path}: seed")
        kwargs = self.protocol_settings(raw, protocol, selection, space)
        kwargs |= self.search_settings(raw, protocol, seed, n_seeds)
        return Study(
            name=name,
            path=self.path,
            protocol=protocol,
            selection=selection,
            description=description,
            seed=seed,
            n_seeds=n_seeds,
            batch_size=self.integer(raw, "batch_size", 64, low=1),
            max_epochs=self.integer(raw, "max_epochs", 20, low=1),
            patience=self.integer(raw, "patience", 3, low=1),
            normalization=normalization,
            validation_size=validation_size,
            validation_seed=self.integer(val, "seed", 0, low=0, where="validation"),
            space=space,
            published_final=final,
            data=data,
            **kwargs,
        )

    def protocol_settings(
        self, raw: dict, protocol: ProtocolKind, selection: Selection, space: dict[str, Domain]
    ) -> dict[str, Any]:
        """Stages and their start (staged and replicate studies), the replicate's extras."""
        kwargs: dict[str, Any] = {}
        if protocol in (ProtocolKind.STAGED, ProtocolKind.REPLICATE):
            kwargs["stages"] = self.stages(raw, space)
            kwargs["start"] = self.start(raw, space, kwargs["stages"])
        if protocol is ProtocolKind.REPLICATE:
            kwargs |= self.replicate(raw, kwargs["stages"], selection)
        elif protocol is not ProtocolKind.STAGED:
            for key in ("stages", "start"):
                if key in raw:
                    raise self.fail(
                        key,
                        f"only staged and replicate studies have {key}; this one is "
                        f"protocol = {protocol.value!r}",
                    )
        return kwargs

    def search_settings(
        self, raw: dict, protocol: ProtocolKind, seed: int, n_seeds: int
    ) -> dict[str, Any]:
        """[grid] and [search]: members per engine call, the search's budget, sampler, pruner,
        time budget and confirmation round."""
        grid = self.table(raw, "grid", {"batch"})
        search = self.table(raw, "search", {"n_trials", "batch", "pruner", "sampler_seed",
                                            "confirm_top", "confirm_seeds",
                                            "time_budget_s"})  # fmt: skip
        time_budget_s = None
        if "time_budget_s" in search:
            time_budget_s = self.number(search, "time_budget_s", "search", positive=True)
        # Only a search confirms its winners; other protocols have nothing to confirm.
        default_top = 3 if protocol is ProtocolKind.SEARCH else 0
        confirm_top = self.integer(search, "confirm_top", default_top, low=0, where="search")
        confirm_seeds = self.integer(search, "confirm_seeds", 5, low=2 if confirm_top else 0,
                                     where="search")  # fmt: skip
        batch_from = search if protocol is ProtocolKind.SEARCH else grid
        where = "search" if protocol is ProtocolKind.SEARCH else "grid"
        pruner = search.get("pruner", "median")
        if pruner not in ("median", "none"):
            raise self.fail("search.pruner", f"must be 'median' or 'none', got {pruner!r}")
        if confirm_top and n_seeds > CONFIRM_SEED_OFFSET:
            raise self.fail("n_seeds", f"must be at most {CONFIRM_SEED_OFFSET} with "
                            f"search.confirm_top > 0 (confirmation seeds start at seed + "
                            f"{CONFIRM_SEED_OFFSET}), got {n_seeds}")  # fmt: skip
        if confirm_top:
            check_last_seed(seed + CONFIRM_SEED_OFFSET, confirm_seeds, f"{self.path}: seed")
        return dict(
            batch=self.integer(batch_from, "batch", 375, low=1, where=where),
            n_trials=self.integer(search, "n_trials", 100, low=1, where="search"),
            pruner=pruner,
            sampler_seed=self.integer(search, "sampler_seed", 0, low=0, where="search"),
            confirm_top=confirm_top,
            confirm_seeds=confirm_seeds,
            time_budget_s=time_budget_s,
        )

    def data(self, raw: dict) -> dict[str, Any]:
        """[data]: a name or a path (resolved against the study file's folder), checked for
        shape here; the data itself is checked when it is loaded, before any run folder."""
        table = self.table(raw, "data", {"name", "path", "test_size", "split_seed",
                                         "normalization"})  # fmt: skip
        if not table:
            return {}
        if ("name" in table) == ("path" in table):
            raise self.fail("data", "needs exactly one of name = "
                            f"{' | '.join(map(repr, DATA_NAMES))} or path = 'file.npz' / "
                            f"'folder', got {table!r}")  # fmt: skip
        spec = dict(table)
        if "name" in spec and spec["name"] not in DATA_NAMES:
            raise self.fail("data.name", f"must be one of {', '.join(DATA_NAMES)}, got "
                            f"{spec['name']!r}; or give path = 'file.npz' for your own "
                            "data")  # fmt: skip
        if "path" in spec:
            if not isinstance(spec["path"], str) or not spec["path"]:
                raise self.fail("data.path", f"must be a non-empty string, got {spec['path']!r}")
            try:
                path = user_path(spec["path"], "path")
            except UserError as exc:
                raise self.fail("data.path", str(exc)) from None
            spec["path"] = str(path if path.is_absolute() else self.path.parent.resolve() / path)
        if spec.get("name") != "digits":
            extra = sorted({"test_size", "split_seed"} & set(spec))
            if extra:
                raise self.fail(f"data.{extra[0]}", "only name = 'digits' takes a test split "
                                "(test_size, split_seed); other data brings its own")  # fmt: skip
        return spec

    def normalization(self, raw: dict, data: dict) -> dict[str, float] | str:
        """[normalization] mean and std, or normalization = "auto" (at the top or in [data]);
        absent: the paper's 0.5 and 0.5 for FashionMNIST, "auto" for other data."""
        given = raw.get("normalization")
        if "normalization" in data:
            if given is not None:
                raise self.fail("data.normalization", "normalization is given twice (at the "
                                "top and in [data]); keep one")  # fmt: skip
            given = data.pop("normalization")
            if isinstance(given, list) and len(given) == 2:
                given = {"mean": given[0], "std": given[1]}
        if given is None:
            return dict(DEFAULT_NORMALIZATION) if is_fashion_mnist(data) else AUTO
        if given == AUTO:
            return AUTO
        if not isinstance(given, dict):
            raise self.fail("normalization", f'must be "auto" or a table of mean and std, got '
                            f"{given!r}")  # fmt: skip
        self.no_unknown(given, {"mean", "std"}, "normalization")
        return {
            "mean": self.number(
                given, "mean", "normalization", default=DEFAULT_NORMALIZATION["mean"]
            ),
            "std": self.number(
                given, "std", "normalization", positive=True, default=DEFAULT_NORMALIZATION["std"]
            ),
        }


def load_study(name_or_path: str | os.PathLike) -> Study:
    """Read and validate a study file (see the module docstring)."""
    path = resolve_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read study file {path}: {exc}") from exc
    return parse_study(text, path)


def parse_study(text: str, path: str | os.PathLike) -> Study:
    """Validate a study file's text; `path` is named in errors (and becomes `Study.path`)."""
    path = Path(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from exc
    return StudyFileParser(path).study(raw)
