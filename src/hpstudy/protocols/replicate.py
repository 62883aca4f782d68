"""The replication protocol: every number the paper published, re-measured over seeds.

    >>> protocol = ReplicateProtocol(load_study("replicate"), trainer)
    >>> tables = protocol.run()            # our staged path (one seed), then Tables I-IV
    >>> verdict = hpstudy.tabulate.judge_run(study, trainer.store.records(), split)

The paper carried its own winners forward (T4, then Adam, then 0.005), so its Tables II-IV were
measured on configurations a staged search with another seed never trains. This protocol trains
exactly those configurations, along the paper's path, once per seed, under the paper's metric
(best test accuracy, early stopping on test, patience 3, at most 20 epochs, batch 64). A
configuration in two tables is one trial per seed. Beside it runs the paper's staged search with
one seed, as the paper did (`[replicate] staged_seeds`), on the same store: its trials share keys
with the replication's, so nothing is trained twice.

The tables and the verdict are `hpstudy.tabulate` (`replicate`, `replication`), from stored
records alone.
`--with-clean` trains two more arms on the same seeds to measure the leak and split it in two:
the clean protocol (54,000 training images, stopping on a 6,000-image validation split, the
test set read once) and the paper's test-selected protocol on the clean run's 54,000 training
images (`held_out_split`): training on 60,000 instead of 54,000 images, plus choosing the epoch
on the test set.
"""

from __future__ import annotations

from hpstudy.config.config import Config
from hpstudy.config.study import Study
from hpstudy.protocols.base import Protocol, evaluate_test_once
from hpstudy.protocols.events import StageFinished, StageStarted
from hpstudy.protocols.staged import StagedProtocol
from hpstudy.stats.tables import StageTable
from hpstudy.tabulate.plans import replicate_groups
from hpstudy.tabulate.replicate import replication_tables, staged_study


class ReplicateProtocol(Protocol):
    name = "replicate"

    def __init__(self, study: Study, trainer) -> None:
        super().__init__(study, trainer)
        self.clean = None  # `--with-clean`: a Trainer whose split selects on validation
        self.held_out = None  # `--with-clean`: test-selected on the clean split (`held_out_split`)
        staged = staged_study(study)
        self.staged = StagedProtocol(staged, trainer) if staged else None

    def run(self) -> list[StageTable]:
        trainer = self.trainer
        configs = [c for group in replicate_groups(self.study) for c in group]
        finished = trainer.store.finished()
        n_reused = sum(trainer.key(c) in finished for c in configs)
        trainer.on_event(StageStarted(1, None, "replication", len(configs), n_reused))
        trainer.stage = "replication"
        by_key = trainer.ensure(configs)
        staged_tables = []
        if self.staged is not None:
            self.staged.keep = {trainer.key(c) for c in configs}  # the final model needs them
            staged_tables = self.staged.run()
        if self.clean is not None:
            self._train_clean(configs)
        if self.held_out is not None:
            self._train_held_out(configs)
        tables = replication_tables(self.study, by_key, self.trainer.data.split)
        for table in tables:
            trainer.on_event(StageFinished(table))
        return [*staged_tables, *tables]

    def _train_clean(self, configs: list[Config]) -> None:
        """The same cells with stopping and selection on validation; test read once each."""
        by_key = self._train_arm(self.clean, 2, "clean", configs)
        evaluate_test_once(self.clean, configs, by_key)

    def _train_held_out(self, configs: list[Config]) -> None:
        """The paper's protocol (the epoch chosen on test) on the clean run's training images."""
        self._train_arm(self.held_out, 3, "held-out", configs)

    @staticmethod
    def _train_arm(trainer, index: int, name: str, configs: list[Config]) -> dict:
        """One `--with-clean` arm: its stage announced with what the store already holds."""
        finished = trainer.store.finished()
        n_reused = sum(trainer.key(c) in finished for c in configs)
        trainer.on_event(StageStarted(index, None, name, len(configs), n_reused))
        trainer.stage = name
        return trainer.ensure(configs)

    @property
    def trainers(self) -> list:
        """Every trainer this protocol trains with (`n_trained` counts them all)."""
        return [t for t in (self.trainer, self.clean, self.held_out) if t is not None]
