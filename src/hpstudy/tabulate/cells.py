"""The paper's published numbers as cells: which configuration each was measured on.

>>> cells = paper_cells(load_study("replicate"))  # every published number, the paper's path
>>> cells[0].table, cells[0].row, cells[0].published   # 'I', 'T1', 84.2
>>> config_id(config)                              # 'T4-Adam-0.005-ReLU'
>>> held_out_split(clean_split)                    # the third `--with-clean` arm's split
"""

from __future__ import annotations

from dataclasses import dataclass

from hpstudy.config.config import Config
from hpstudy.config.factors import config_text, factor_label
from hpstudy.config.study import Study

ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII")
HELD_OUT_ARM = "test-selected, trained on the clean split"  # the third arm's split marker


def held_out_split(clean_split: dict) -> dict:
    """The third arm's split: the clean run's training images, selection on the test set."""
    return {**clean_split, "selection": "test", "n_eval": clean_split["n_test"],
            "arm": HELD_OUT_ARM}  # fmt: skip


@dataclass(frozen=True)
class PublishedCell:
    """One number of the paper's tables and the configuration it was measured on."""

    table: str  # "I".."IV"
    stage: str  # the stage (and table) name in the study file
    factor: str
    row: str  # the paper's row label: "T4", "Adam", "0.005", "ReLU"
    factors: dict  # topology, optimizer, lr, activation
    published: float  # %

    @property
    def name(self) -> str:
        """The row as a sentence names it: 'T4', 'Adam', 'lr 0.005', 'ReLU'."""
        return f"lr {self.row}" if self.factor == "lr" else self.row


def paper_cells(study: Study) -> list[PublishedCell]:
    """Every published number along the paper's own path (each stage's published winner is
    carried forward, as the paper did)."""
    base, cells = dict(study.start), []
    for i, stage in enumerate(study.stages):
        for value, published in zip(stage.values, stage.published or (), strict=False):
            cells.append(PublishedCell(ROMAN[i], stage.name, stage.factor,
                                       factor_label(stage.factor, value),
                                       {**base, stage.factor: value}, published))  # fmt: skip
        if stage.published:
            best = max(range(len(stage.values)), key=lambda j: stage.published[j])
            base = {**base, stage.factor: stage.values[best]}
    return cells


def config_id(config: Config) -> str:
    """'T4-Adam-0.005-ReLU': shared by every published number of one configuration."""
    return config_text(config).replace(", ", "-")
