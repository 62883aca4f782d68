"""The study model: what one study file says (space, protocol, seeds, budget, selection split).

    >>> from hpstudy.config.studyfile import load_study
    >>> study = load_study("paper")                 # or a path: load_study("studies/grid.toml")
    >>> study.protocol, study.selection, study.seeds
    (<ProtocolKind.STAGED: 'staged'>, <Selection.TEST: 'test'>, (42,))
    >>> study = study.with_overrides(n_seeds=5, max_epochs=3)

`hpstudy.config.studyfinder` finds a study file (a bare name such as `paper` is looked up in
`$HPSTUDY_STUDIES_DIR`, else among the studies shipped inside the package, `hpstudy/studies/`,
linked as `studies/` at the top of a checkout) and `hpstudy.config.studyfile` checks it key by
key; every mistake is a `UserError` naming the key and the file, so the CLI exits with code 2.
See `studies/paper.toml` for a commented example of every key.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpstudy.config.choices import MAX_SEED
from hpstudy.config.config import Config
from hpstudy.config.factors import Domain, config_values
from hpstudy.errors import UserError

SCHEMA_VERSION = 1
CONFIRM_SEED_OFFSET = 1000  # search: confirmation seeds are seed + 1000 + i (never search seeds)
# replicate: how close (percentage points) a cheaper configuration must be shown to be to the
# best mean before the verdict recommends it instead (TOST, `hpstudy.stats.equivalence`).
# Half a point is about the seed-to-seed sd of one FashionMNIST configuration (0.2-0.6 pp in
# the measured replication) and the binomial sd of one accuracy on 10,000 test images at 87%
# (0.34 pp): a smaller gap is one a rerun could show either way.
EQUIVALENCE_MARGIN = 0.5
# Package data (pyproject's package-data), so a wheel install finds `hpstudy run paper` too.
# Study and stage names become folder and file names (runs/<study>, tables/<i>_<stage>.json)
# and report ids: ASCII only, no separators, not starting with "." or "-" (no "..", no
# hidden files, no options), short enough for any file system.
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
SLUG_RULE = "1-64 ASCII letters, digits, '.', '-' or '_', starting with a letter or digit"


class ProtocolKind(enum.Enum):
    STAGED = "staged"  # one factor per stage, each stage's winner carried forward
    GRID = "grid"  # the full factorial space
    SEARCH = "search"  # Optuna's TPE with a pruner, in batches
    REPLICATE = "replicate"  # the paper's published cells over seeds, beside its staged search


class Selection(enum.Enum):
    TEST = "test"  # early stopping and selection on the test set: the paper's leak, on purpose
    VALIDATION = "validation"  # on a seeded, stratified split carved from the training set

    @property
    def is_leaky(self) -> bool:
        return self is Selection.TEST


# The paper's Normalize((0.5,), (0.5,)); a study file's [normalization] table overrides it.
# Other data than FashionMNIST defaults to normalization = "auto" (from its training split).
DEFAULT_NORMALIZATION = {"mean": 0.5, "std": 0.5}
AUTO = "auto"
DATA_NAMES = ("fashion-mnist", "mnist", "kmnist", "digits")
# What a run may change beside its study file (run.json's "overrides"; the CLI's --seeds,
# --max-epochs, --with-clean and --time-budget).
OVERRIDES = ("n_seeds", "max_epochs", "with_clean", "time_budget_s")


@dataclass(frozen=True)
class Stage:
    """One round of a staged study: vary `factor` over `values`, everything else from the base."""

    name: str  # e.g. "topology"
    factor: str  # one of FACTORS
    values: tuple  # canonical values (topology as a hidden-width tuple)
    title: str = ""  # e.g. "Table I: accuracy of different topologies"
    published: tuple[float, ...] | None = None  # the paper's accuracy (%) per value, if any


@dataclass(frozen=True)
class Study:
    """A validated study file. Accuracies are fractions in [0, 1]; `published` ones are %."""

    name: str  # run folder and Optuna study name
    path: Path  # the file it came from
    protocol: ProtocolKind
    selection: Selection
    description: str = ""
    seed: int = 42  # first seed; seeds are seed, seed + 1, ...
    n_seeds: int = 1
    batch_size: int = 64
    max_epochs: int = 20
    patience: int = 3
    # {"mean", "std"}, or "auto": from the training split (the values are in the run's split)
    normalization: dict[str, float] | str = field(
        default_factory=lambda: dict(DEFAULT_NORMALIZATION)
    )
    validation_size: int = 6000  # used when selection = validation
    validation_seed: int = 0  # seed of the stratified validation split
    # factor -> canonical choices, or (search only) a Range: see hpstudy.config.factors
    space: dict[str, Domain] = field(default_factory=dict)
    start: dict[str, Any] = field(default_factory=dict)  # staged: the configuration stage 1 uses
    stages: tuple[Stage, ...] = ()
    batch: int = 375  # grid/search: members per engine call (and per worker claim)
    n_trials: int = 100  # search: trial budget
    pruner: str = "median"  # search: "median" or "none"
    sampler_seed: int = 0  # search: TPE seed
    confirm_top: int = 3  # search: best configurations retrained with new seeds (0: none)
    confirm_seeds: int = 5  # search: seeds of that confirmation (seed + 1000, seed + 1001, ...)
    time_budget_s: float | None = None  # search: wall-clock seconds, confirmation included
    published_final: float | None = None  # the paper's final test accuracy (%)
    staged_seeds: int = 1  # replicate: seeds of the staged search run beside it (0: none)
    with_clean: bool = False  # replicate: also train every cell on the validation split
    equivalence_margin: float = EQUIVALENCE_MARGIN  # replicate: the recommendation's margin (pp)
    # [data]: datasets.load_dataset's spec ({} is FashionMNIST); a path is absolute here.
    data: dict[str, Any] = field(default_factory=dict)
    # The data's shape, known once it is loaded (`with_data_shape`); FashionMNIST's by default.
    n_inputs: int = 784
    n_classes: int = 10
    input_shape: tuple[int, ...] | None = None  # (H, W) or (D,); None: what n_inputs implies

    @property
    def is_fashion_mnist(self) -> bool:
        """Whether the study trains on FashionMNIST (no [data], or name = "fashion-mnist")."""
        return is_fashion_mnist(self.data)

    @property
    def data_label(self) -> str:
        """How messages and the report name the data: 'mnist', or the file's path."""
        return str(self.data.get("path") or self.data.get("name") or "fashion-mnist")

    def with_data_shape(
        self, n_inputs: int, n_classes: int, input_shape: tuple[int, ...] | None = None
    ) -> Study:
        """The study once its data is loaded: its configurations take that shape."""
        shape = tuple(input_shape) if input_shape is not None else None
        return dataclasses.replace(self, n_inputs=n_inputs, n_classes=n_classes,
                                   input_shape=shape)  # fmt: skip

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.seed + i for i in range(self.n_seeds))

    @property
    def confirmation_seeds(self) -> tuple[int, ...]:
        """search: seeds of the confirmation round, `seed + 1000 + i`, apart from `seeds`."""
        if not self.confirm_top:
            return ()
        return tuple(self.seed + CONFIRM_SEED_OFFSET + i for i in range(self.confirm_seeds))

    def config(self, *, seed: int, **factors: Any) -> Config:
        """The Config for these factor values and seed, with the study's fixed settings (a
        factor the study searches, such as batch_size, overrides its fixed value)."""
        fixed = {"batch_size": self.batch_size, "max_epochs": self.max_epochs,
                 "patience": self.patience, "n_inputs": self.n_inputs,
                 "n_classes": self.n_classes, "input_shape": self.input_shape}  # fmt: skip
        return Config(**(fixed | config_values(factors)), seed=seed)

    def replace(self, **changes: Any) -> Study:
        """The study with the settings a run records beside its file changed, each checked as
        on the command line: `study.replace(max_epochs=5, n_seeds=3)`. Everything else lives
        in the study file, the only other thing run.json keeps, so it changes there."""
        unknown = sorted(set(changes) - set(OVERRIDES))
        if unknown:
            raise UserError(f"Study.replace takes {', '.join(OVERRIDES)}, got {unknown[0]!r}; "
                            f"change {unknown[0]} in the study file {self.path}")  # fmt: skip
        if changes.get("with_clean") is False and self.with_clean:  # an override only adds it
            raise UserError(f"with_clean is already true for {self.name} (from {self.path} or "
                            "an earlier replace), and a run cannot record turning it off; load "
                            "the study again, with with_clean = false in its file")  # fmt: skip
        return self.with_overrides(**changes)

    def with_overrides(self, *, n_seeds: int | None = None, max_epochs: int | None = None,
                       with_clean: bool | None = None,
                       time_budget_s: float | None = None) -> Study:  # fmt: skip
        """The study with command-line overrides (`--seeds`, `--max-epochs`, `--with-clean`,
        `--time-budget`)."""
        changes: dict[str, Any] = {}
        if time_budget_s is not None:
            if self.protocol is not ProtocolKind.SEARCH:
                raise UserError(f"--time-budget is for search studies; {self.name} has "
                                f"protocol = {self.protocol.value!r}")  # fmt: skip
            if not math.isfinite(time_budget_s) or time_budget_s <= 0:
                raise UserError(f"--time-budget must be a positive number of seconds, "
                                f"got {time_budget_s!r}")  # fmt: skip
            changes["time_budget_s"] = float(time_budget_s)
        if with_clean:
            if self.protocol is not ProtocolKind.REPLICATE:
                raise UserError(f"--with-clean is for replicate studies; {self.name} has "
                                f"protocol = {self.protocol.value!r}")  # fmt: skip
            changes["with_clean"] = True
        for key, option, value in (
            ("n_seeds", "--seeds", n_seeds),
            ("max_epochs", "--max-epochs", max_epochs),
        ):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise UserError(f"{option} must be an integer >= 1, got {value!r}")
                changes[key] = value
        if "n_seeds" in changes:
            check_last_seed(self.seed, changes["n_seeds"], f"--seeds {changes['n_seeds']}")
        return dataclasses.replace(self, **changes)


def check_last_seed(seed: int, n_seeds: int, where: str) -> None:
    """Seeds run from `seed` to `seed + n_seeds - 1`; torch and the store take 64-bit ones."""
    last = seed + n_seeds - 1
    if last > MAX_SEED:
        raise UserError(f"{where}: the last seed (seed + n_seeds - 1 = {last}) must be at most "
                        f"2**63-1, got seed={seed} with n_seeds={n_seeds}; lower seed or "
                        "n_seeds")  # fmt: skip


def is_fashion_mnist(data: dict) -> bool:
    """Whether a `[data]` table means FashionMNIST (absent, or name = "fashion-mnist")."""
    return data.get("name", "fashion-mnist") == "fashion-mnist" and "path" not in data
