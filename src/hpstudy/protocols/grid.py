"""The grid protocol: every configuration of the space, once per seed.

    >>> tables = GridProtocol(load_study("grid"), trainer).run()   # one table, best first

Several processes may share one grid study (`hpstudy worker grid --storage postgresql://...`):
the process that creates the study enqueues every trial, the others wait until it has, and all
claim WAITING trials in batches (`batch` in the study file) until none is left.
"""

from __future__ import annotations

import time

from hpstudy.config.config import Config
from hpstudy.protocols.base import Protocol
from hpstudy.protocols.events import StageFinished, StageStarted, Waiting
from hpstudy.protocols.trainer import POLL_S
from hpstudy.stats.tables import StageTable
from hpstudy.tabulate.plans import grid_groups

POPULATED = "populated"  # study user attr: every trial of the grid has been enqueued
POPULATE_WAIT_S = 120.0  # how long a worker waits for the creating process to enqueue


class GridProtocol(Protocol):
    name = "grid"

    def run(self) -> list[StageTable]:
        trainer = self.trainer
        groups = grid_groups(self.study)
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
