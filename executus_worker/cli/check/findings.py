"""One finding of ``check``: a level, what was checked, and what was found."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)
