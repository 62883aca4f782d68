"""Which configurations a protocol trains: pure functions of the study, shared by the protocols
(to train them) and the tables (to find them among the records).

    >>> grid_groups(study)                 # one list (a config per seed) per grid point
    >>> stage_groups(study, stage, base)   # one list per value the stage tries, around `base`
    >>> replicate_groups(study)            # one list per distinct published configuration
    >>> seedless(study, config)            # a search configuration as the study's first seed
"""

from __future__ import annotations

import itertools

from hpstudy.config.config import Config
from hpstudy.config.factors import factors_key, searched
from hpstudy.config.study import Stage, Study
from hpstudy.tabulate.cells import paper_cells


def grid_groups(study: Study) -> list[list[Config]]:
    """One list (one config per seed) for each distinct configuration of the factorial space
    (points that differ only in a factor their optimizer ignores, such as Adam's momentum, are
    one configuration)."""
    space, names = study.space, searched(study.space)
    points = itertools.product(*(space[f] for f in names))
    first = (study.config(seed=study.seed, **dict(zip(names, p, strict=True))) for p in points)
    return [[config.replace(seed=s) for s in study.seeds] for config in dict.fromkeys(first)]


def stage_groups(study: Study, stage: Stage, base: dict) -> list[list[Config]]:
    """One list of configs (one per seed) for each value the stage tries, the other factors
    at `base` (the earlier stages' winners)."""
    return [[study.config(seed=s, **{**base, stage.factor: v}) for s in study.seeds]
            for v in stage.values]  # fmt: skip


def replicate_groups(study: Study) -> list[list[Config]]:
    """One list (one config per seed) per distinct published configuration."""
    seen, groups = set(), []
    for cell in paper_cells(study):
        key = factors_key(cell.factors)
        if key not in seen:
            seen.add(key)
            groups.append([study.config(seed=s, **cell.factors) for s in study.seeds])
    return groups


def seedless(study: Study, config: Config) -> Config:
    """A configuration without its seed (as the study's first seed): a search row's identity."""
    return config.replace(seed=study.seeds[0])
