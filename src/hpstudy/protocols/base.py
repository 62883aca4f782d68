"""What every protocol shares: the base class, and the test set read once per trial.

>>> protocol = make_protocol(study, trainer); tables = protocol.run()
>>> protocol.tables(store.records(), tests)          # `hpstudy.tabulate` on the trainer's split
>>> evaluate_test_once(trainer, configs, by_key)    # clean protocols: the test set, once a trial
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from hpstudy.config.config import Config
from hpstudy.config.study import Study
from hpstudy.protocols.trainer import Trainer
from hpstudy.stats.tables import StageTable
from hpstudy.storage import TrialRecord
from hpstudy.tabulate import tabulate


class Protocol(abc.ABC):
    """Decides what to train next from what the store holds; its tables are `hpstudy.tabulate`'s
    on the trainer's split."""

    name: str = ""

    def __init__(self, study: Study, trainer: Trainer) -> None:
        self.study = study
        self.trainer = trainer

    @abc.abstractmethod
    def run(self) -> list[StageTable]:
        """Train whatever is missing; return the tables (emitting StageFinished for each)."""

    def tables(self, records: Sequence[TrialRecord], tests: dict[str, float]) -> list[StageTable]:
        """The tables from stored records (`tests`: key -> test accuracy of stage winners)."""
        return tabulate(self.study, records, tests, self.trainer.data.split)

    @property
    def trainers(self) -> list[Trainer]:
        """Every trainer the protocol trains through (a replication's clean arms add theirs)."""
        return [self.trainer]


def evaluate_test_once(
    trainer: Trainer, configs: Sequence[Config], by_key: dict[str, TrialRecord]
) -> None:
    """Each trial's test accuracy at its chosen epoch, measured once and kept in the store
    (`Store.set_test_accuracy`), never recomputed."""
    from hpstudy import engine

    tests = trainer.store.test_accuracies()
    for config in configs:
        record = by_key[trainer.key(config)]
        if record.key in tests or not record.is_usable:
            continue
        state_dict, _ = trainer.weights_of(record)
        evaluation = engine.evaluate(config, state_dict, trainer.data.test,
                                     device=trainer.data.device)  # fmt: skip
        trainer.store.set_test_accuracy(record.key, evaluation.accuracy)
