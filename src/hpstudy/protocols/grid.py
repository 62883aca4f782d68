"""The grid protocol: every configuration of the space, once per seed.

    >>> tables = GridProtocol(load_study("grid"), trainer).run()   # one table, best first

Several processes may share one grid study (`hpstudy worker grid --storage postgresql://...`):
the process that creates the study enqueues every trial, the others wait until it has, and all
claim WAITING trials in batches (`batch` in the study file) until none is left.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

from hpstudy.config.config import Config
from hpstudy.config.factors import config_label, searched, shown
from hpstudy.protocols.base import Protocol, make_row, ranked_table
from hpstudy.protocols.events import StageFinished, StageStarted, Waiting
from hpstudy.protocols.trainer import POLL_S
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord, trial_key

POPULATED = "populated"  # study user attr: every trial of the grid has been enqueued
POPULATE_WAIT_S = 120.0  # how long a worker waits for the creating process to enqueue


class GridProtocol(Protocol):
    name = "grid"

    def configs(self) -> list[list[Config]]:
        """One list (one config per seed) for each distinct configuration of the factorial
        space (points that differ only in a factor their optimizer ignores, such as Adam's
        momentum, are one configuration)."""
        space, names = self.study.space, searched(self.study.space)
        points = itertools.product(*(space[f] for f in names))
        first = (self.study.config(seed=self.study.seed, **dict(zip(names, p, strict=True)))
                 for p in points)  # fmt: skip
        return [[config.replace(seed=s) for s in self.study.seeds]
                for config in dict.fromkeys(first)]  # fmt: skip

    def run(self) -> list[StageTable]:
        trainer = self.trainer
        groups = self.configs()
        configs = [c for g in groups for c in g]
        finished = trainer.store.finished()
        n_reused = sum(trainer.key(c) in finished for c in configs)
        trainer.on_event(StageStarted(1, 1, "grid", len(configs), n_reused))
        self.populate(configs, created=trainer.store.created)
        trainer.stage = "grid"
        trainer.ensure(configs)
        (table,) = self.tables(trainer.store.records(), {})
        trainer.on_event(StageFinished(table))
        return [table]

    def populate(self, configs: list[Config], *, created: bool) -> None:
        """Enqueue every missing trial once (creator), or wait until the creator has."""
        store = self.trainer.store
        if created or store.get_meta(POPULATED):
            if not store.get_meta(POPULATED):
                known = {r.key for r in store.records()}
                missing = [c for c in configs if self.trainer.key(c) not in known]
                store.enqueue(missing, protocol=self.name, split=self.trainer.data.split,
                              space=self.study.space)  # fmt: skip
                store.set_meta(POPULATED, True)
            return
        deadline = time.monotonic() + POPULATE_WAIT_S
        while not store.get_meta(POPULATED) and time.monotonic() < deadline:
            self.trainer.on_event(Waiting(0))
            time.sleep(POLL_S)
        # Past the deadline the creator is presumably dead: `ensure` enqueues what is missing.

    def tables(
        self, records: Sequence[TrialRecord], tests: dict[str, float], split: dict | None = None
    ) -> list[StageTable]:
        split = self.trainer.data.split if split is None else split
        by_key = {r.key: r for r in records if r.status.is_finished}
        rows = []
        for group in self.configs():
            found = [by_key[k] for c in group if (k := trial_key(c, split)) in by_key]
            if found:
                label = config_label(group[0], shown(self.study.space))
                rows.append(make_row(label, found, tests=tests,
                                     leaky=self.study.selection.is_leaky))  # fmt: skip
        table = ranked_table(
            self.study,
            self.name,
            rows,
            name="grid",
            title="Grid: {n} configurations, best first",
            rule=self.rule(),
        )
        return [table]  # fmt: skip
