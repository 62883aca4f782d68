"""What a replication found, as data: each published cell against our seeds, the claims, the
configuration to use, the final model, the leak; `Replication.to_dict()` is replication.json.

    >>> replication.cells[0].verdict, replication.claims[0].verdict   # 'consistent', 'contradicted'
    >>> replication.counts["numbers"]["consistent"], replication.headline
    >>> json.dump(replication.to_dict(), f)                            # schema `SCHEMA_VERSION`

`hpstudy.tabulate.replication.judge` builds these from stored records; the report reads the
dict back (`hpstudy.report.answer`), so the page shows exactly what the file says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpstudy.config.config import Config
from hpstudy.config.cost import n_parameters
from hpstudy.config.factors import config_text
from hpstudy.stats import equivalence as eq
from hpstudy.stats import verdict as v
from hpstudy.tabulate.cells import PublishedCell, config_id

# replication.json; 2 added the prediction interval, Holm, headline, ...; 3 replaced
# recommended.not_distinguishable by the equivalence comparisons (TOST) and their margin
SCHEMA_VERSION = 3


def _config_dict(config: Config) -> dict:
    return {k: val for k, val in config.to_dict().items() if k != "seed"}


@dataclass(frozen=True)
class CellResult:
    """A published number against our seeds."""

    cell: PublishedCell
    config: Config  # the first seed's configuration
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]  # best test accuracy per seed (fractions), the paper's metric
    outcomes: tuple[str, ...]
    epochs: tuple[int, ...]
    interval: v.Interval  # of our mean: t over seeds (Wilson for one seed)
    prediction: v.Interval  # where one new run of ours would land
    verdict: str  # consistent, above, below, diverged ('' without an interval)
    flags: tuple[str, ...]  # "2 of 5 seeds diverged", "hit the epoch cap while improving", ...
    diverged: bool = False  # a seed diverged or stayed at chance
    # one per study seed, nan where that seed has no finished trial: what paired tests pair
    paired: tuple[float, ...] = ()

    @property
    def config_id(self) -> str:
        return config_id(self.config)

    def to_dict(self) -> dict:
        return {
            "table": self.cell.table,
            "row": self.cell.row,
            "config": _config_dict(self.config),
            "config_id": self.config_id,
            "published": self.cell.published,
            "mean": _pct(self.interval.mean),
            "ci95": [_pct(self.interval.low), _pct(self.interval.high)],
            "interval": self.interval.method,
            "prediction95": [_pct(self.prediction.low), _pct(self.prediction.high)],
            "sd": _pct(self.prediction.sd),
            "n": self.interval.n if len(self.seeds) > 1 else len(self.seeds),
            "seeds": list(self.seeds),
            "accuracies": [_pct(a) for a in self.accuracies],
            "min": _pct(min(self.accuracies, default=math.nan)),
            "max": _pct(max(self.accuracies, default=math.nan)),
            "outcomes": list(self.outcomes),
            "epochs": list(self.epochs),
            "verdict": self.verdict,
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class Recommended:
    """The configuration to use: the best by mean, or the cheapest configuration shown
    equivalent to it within ±margin points (TOST of the best against every cheaper
    configuration, Holm-adjusted over those comparisons; `hpstudy.stats.equivalence`)."""

    cell: CellResult  # the chosen configuration's results
    best: CellResult  # the best by mean (the same cell when no cheaper one is shown equivalent)
    # the best against each cheaper configuration that trains, in the order of the cells
    comparisons: tuple[tuple[CellResult, eq.EquivalenceComparison], ...]
    n_params: int
    margin: float  # points: the study's [replicate] equivalence_margin

    @property
    def equivalent(self) -> tuple[CellResult, ...]:
        """The cheaper configurations shown within the margin of the best."""
        return tuple(r for r, c in self.comparisons if c.equivalent)

    def text(self, n_seeds: int) -> str:
        c, best, k, m = self.cell, self.best, len(self.equivalent), len(self.comparisons)
        said = (f"{config_text(c.config)}: {_p(100 * c.interval.mean)}% mean, 95% interval "
                f"[{_p(100 * c.interval.low)}, {_p(100 * c.interval.high)}], "
                f"{self.n_params:,} parameters")  # fmt: skip
        within = f"within ±{self.margin:g} pp of it at n = {n_seeds}"
        family = (f"TOST, Holm-adjusted over the {m} cheaper configuration"
                  f"{'s' if m != 1 else ''}")  # fmt: skip
        if best is c and not m:
            return said + "; the best mean, and no configuration that trains is cheaper."
        if best is c:
            near = min(self.comparisons, key=lambda rc: _nan_last(abs(rc[1].equivalence.estimate)))
            return (said + f"; the best mean. No cheaper configuration is shown {within} "
                    f"({family}); the nearest, {config_text(near[0].config)}, "
                    f"{_gap(near[1])}.")  # fmt: skip
        shown = next(cmp for r, cmp in self.comparisons if r is c)
        others = f"{k} configuration{'s' if k != 1 else ''}"
        return (said + f"; the cheapest of the best mean, {config_text(best.config)} "
                f"({_p(100 * best.interval.mean)}%), and the {others} shown {within} "
                f"({family}); it {_gap(shown)}.")  # fmt: skip

    def to_dict(self, n_seeds: int) -> dict:
        c = self.cell
        return {
            "config": _config_dict(c.config), "config_id": c.config_id,
            "mean": _pct(c.interval.mean), "ci95": [_pct(c.interval.low), _pct(c.interval.high)],
            "prediction95": [_pct(c.prediction.low), _pct(c.prediction.high)],
            "n_params": self.n_params,
            "best_by_mean": {"config_id": self.best.config_id,
                             "mean": _pct(self.best.interval.mean),
                             "n_params": n_parameters(self.best.config)},
            "margin": self.margin,
            # the best minus each cheaper configuration: estimate, its 90% interval (TOST at
            # 0.05 is that interval inside ±margin), the one-sided p's, p_TOST and Holm's p
            "equivalence": [{"config_id": r.config_id, "n_params": n_parameters(r.config),
                             **cmp.to_dict()} for r, cmp in self.comparisons],
            "rule": (f"the best mean among configurations that train (diverged ones excluded); "
                     f"a cheaper configuration replaces it only when shown equivalent within "
                     f"±{self.margin:g} pp: two one-sided paired t-tests (TOST) over the "
                     f"shared seeds of the best minus it against ±{self.margin:g} pp, p the "
                     f"larger one-sided p, Holm-adjusted over the comparisons of the best with "
                     f"every cheaper configuration, equivalent when p_holm < 0.05 (unadjusted, "
                     f"that is the 90% interval inside ±{self.margin:g} pp); of the best and "
                     f"those, the fewest parameters, then the higher mean; at n = {n_seeds}"),
            "text": self.text(n_seeds),
        }  # fmt: skip


def _gap(c: eq.EquivalenceComparison) -> str:
    """'is 1.74 pp below the best (90% interval of the gap [0.72, 2.75] pp, adjusted p 0.97)'."""
    e = c.equivalence
    if e.n < 2:
        return f"has {e.n} shared seed{'s' if e.n != 1 else ''} with the best: not tested"
    side = "below" if e.estimate >= 0 else "above"
    p = f"{c.p_holm:.2g}" if c.p_holm >= 0.001 else "< 0.001"
    return (
        f"is {abs(e.estimate):.2f} pp {side} the best (best minus it: 90% interval "
        f"[{e.low:+.2f}, {e.high:+.2f}] pp, TOST adjusted p {p})"
    ).replace("-", "−")


@dataclass(frozen=True)
class FinalModel:
    """The recommended configuration at the first seed: fixed in advance, never the best seed."""

    cell: CellResult
    seed: int
    accuracy: float  # that seed's test accuracy (fraction; the paper's metric), nan if missing

    def to_dict(self) -> dict:
        c = self.cell
        return {
            "config": _config_dict(c.config),
            "config_id": c.config_id,
            "seed": self.seed,
            "test_accuracy": _pct(self.accuracy),
            "mean": _pct(c.interval.mean),
            "ci95": [_pct(c.interval.low), _pct(c.interval.high)],
            "rule": "the recommended configuration at the first seed, fixed in advance",
        }


@dataclass(frozen=True)
class LeakGap:
    """One configuration under the paper's protocol and under the clean one, same seeds."""

    config: Config  # the first seed's
    leaky: v.Interval  # best test accuracy, epoch chosen on test (60,000 training images)
    clean_validation: v.Interval  # best validation accuracy, epoch chosen on validation
    clean_test: v.Interval  # test accuracy read once, at that epoch
    gap: v.Difference  # leaky minus clean test, paired over seeds, in points
    held_out: v.Interval | None = None  # test-selected, trained on the clean run's 54,000
    selection: v.Difference | None = None  # held-out minus clean test: choosing on test
    size: v.Difference | None = None  # leaky minus held-out: 60,000 vs 54,000 images
    trains: bool = True  # no arm's seed diverged or stayed at chance

    def to_dict(self) -> dict:
        out = {
            "config": _config_dict(self.config), "config_id": config_id(self.config),
            "leaky": _interval(self.leaky), "clean_validation": _interval(self.clean_validation),
            "clean_test": _interval(self.clean_test),
            "gap": _difference(self.gap, "paired t-interval (95%) over shared seeds"),
            "trains": self.trains,
        }  # fmt: skip
        if self.held_out is not None:
            out["held_out"] = _interval(self.held_out)
            out["selection"] = _difference(self.selection, "paired t over shared seeds")
            out["size"] = _difference(self.size, "paired t over shared seeds")
        return out


@dataclass(frozen=True)
class PooledLeak:
    """The leak over every configuration that trains and every seed: one number and its parts."""

    total: v.Difference  # paper's protocol minus clean test, points
    selection: v.Difference | None  # held-out minus clean test (None without the third arm)
    size: v.Difference | None  # paper's protocol minus held-out
    n_configs: int
    n_train: int = 60_000  # training images of the paper's protocol
    n_train_clean: int = 54_000  # of the clean and held-out arms

    def to_dict(self) -> dict:
        method = (f"mean over {self.total.n} (configuration, seed) pairs of {self.n_configs} "
                  "configurations that train (no seed diverged or failed to train in any "
                  "arm); 95% t-interval and two-sided paired t-test over those pairs, "
                  "which treats them as independent (they share seeds and data, so the interval "
                  "is if anything too narrow)")  # fmt: skip
        out = {"total": _difference(self.total, method), "n_configs": self.n_configs,
               "n_train": self.n_train, "n_train_clean": self.n_train_clean}  # fmt: skip
        if self.selection is not None:
            selection = (f"held-out minus clean test: the same {self.n_train_clean:,} training "
                         "images, the epoch chosen on test instead of validation")  # fmt: skip
            out["selection"] = _difference(self.selection, selection)
            out["size"] = _difference(self.size, "paper's protocol minus held-out: both choose "
                                      f"on test, trained on {self.n_train:,} vs "
                                      f"{self.n_train_clean:,} images")  # fmt: skip
        return out


@dataclass(frozen=True)
class Replication:
    """The whole verdict: cells, claims, headline, what to use, and notes on the paper itself."""

    cells: tuple[CellResult, ...]
    claims: tuple[v.Claim, ...]
    notes: tuple[str, ...]  # e.g. the paper's own inconsistencies
    n_seeds: int
    n_test: int
    leak: tuple[LeakGap, ...] = ()  # `--with-clean`: leaky minus clean test accuracy per cell
    headline: str = ""
    recommended: Recommended | None = None
    final_model: FinalModel | None = None
    paper_choice: CellResult | None = None  # the paper's final configuration, our numbers
    pooled_leak: PooledLeak | None = None

    @property
    def counts(self) -> dict:
        """Verdicts over the published numbers and over the distinct configurations;
        'unmeasured': fewer than two finished seeds (an unfinished run)."""
        numbers = {k: sum(c.verdict == k for c in self.cells) for k in v.CELL_VERDICTS}
        numbers["unmeasured"] = sum(not c.verdict for c in self.cells)
        by_config: dict[str, list[CellResult]] = {}
        for c in self.cells:
            by_config.setdefault(c.config_id, []).append(c)
        configs = {"consistent": 0, "outside": 0, "diverged": 0, "unmeasured": 0}
        for same in by_config.values():
            if any(c.verdict == v.DIVERGED for c in same):
                configs["diverged"] += 1
            elif any(not c.verdict for c in same):
                configs["unmeasured"] += 1
            elif all(c.verdict == v.CONSISTENT for c in same):
                configs["consistent"] += 1
            else:
                configs["outside"] += 1
        return {"numbers": {**numbers, "total": len(self.cells)},
                "configurations": {**configs, "total": len(by_config)}}  # fmt: skip

    def to_dict(self) -> dict:
        paper = self.paper_choice
        return {
            "schema_version": SCHEMA_VERSION,
            "n_seeds": self.n_seeds,
            "n_test": self.n_test,
            "headline": self.headline,
            "counts": self.counts,
            "recommended": self.recommended.to_dict(self.n_seeds) if self.recommended else None,
            "final_model": self.final_model.to_dict() if self.final_model else None,
            "paper_choice": None if paper is None else {
                "config": _config_dict(paper.config), "config_id": paper.config_id,
                "mean": _pct(paper.interval.mean),
                "ci95": [_pct(paper.interval.low), _pct(paper.interval.high)]},
            "cells": [c.to_dict() for c in self.cells],
            "claims": [c.to_dict() for c in self.claims],
            "notes": list(self.notes),
            "leak": [g.to_dict() for g in self.leak],
            "leak_pooled": self.pooled_leak.to_dict() if self.pooled_leak else None,
        }  # fmt: skip


def _interval(i: v.Interval) -> dict:
    return {"mean": _pct(i.mean), "ci95": [_pct(i.low), _pct(i.high)], "n": i.n}


def _difference(d: v.Difference, test: str) -> dict:
    return {"estimate": _num(d.estimate), "ci95": [_num(x) for x in d.ci95], "n": d.n,
            "p": _num(d.p_value), "test": test}  # fmt: skip


def _nan_last(x: float) -> float:
    return math.inf if math.isnan(x) else x


def _p(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.2f}"


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def _pct(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(100 * x, 4)
