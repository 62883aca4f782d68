"""Protocols decide which configurations to train next; each implements `Protocol`.

>>> protocol = make_protocol(study, trainer)     # Staged-, Grid-, Search-, ReplicateProtocol
>>> tables = protocol.run()
"""

from __future__ import annotations

from hpstudy.config.study import ProtocolKind, Study
from hpstudy.protocols.base import Protocol
from hpstudy.protocols.grid import GridProtocol
from hpstudy.protocols.replicate import ReplicateProtocol
from hpstudy.protocols.search import SearchProtocol
from hpstudy.protocols.staged import StagedProtocol
from hpstudy.protocols.trainer import Trainer

PROTOCOLS: dict[ProtocolKind, type[Protocol]] = {
    ProtocolKind.STAGED: StagedProtocol,
    ProtocolKind.GRID: GridProtocol,
    ProtocolKind.SEARCH: SearchProtocol,
    ProtocolKind.REPLICATE: ReplicateProtocol,
}


def make_protocol(study: Study, trainer: Trainer | None = None) -> Protocol:
    return PROTOCOLS[study.protocol](study, trainer)


__all__ = [
    "PROTOCOLS",
    "GridProtocol",
    "Protocol",
    "ReplicateProtocol",
    "SearchProtocol",
    "StagedProtocol",
    "Trainer",
    "make_protocol",
]
