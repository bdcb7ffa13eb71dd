"""`Selection`: which rows of a run a loader yields, decided on the metadata columns only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dermgen.errors import ConfigError
from dermgen.filters.names import SCORE_NAMES
from dermgen.schema import SHARD_SCHEMA

_LIST_COLUMNS = {f.name for f in SHARD_SCHEMA if pa.types.is_list(f.type)}


class Selection(BaseModel):
    """Which rows of a run a loader yields.

    - ``include_dropped``: also rows the filter dropped (only those whose PNG was saved have an image).
    - ``statuses``: row statuses to keep; failed rows never have an image, so only "ok" makes sense.
    - ``where``: column -> value or list of values. A scalar matches by equality, a list by membership.
      For list columns (``tags``, ``drop_reasons``) a row matches if its list contains the value / any
      of the values.
    - ``min_scores`` / ``max_scores``: filter score -> inclusive bound. A row whose score is null
      (scores are null when the run's filter was off) fails every bound on that score.
    - ``predicate``: a callable on the row's metadata dict (every column but the image bytes),
      applied last. Must be picklable (a module-level function) to reach DataLoader workers under spawn
      and Ray workers.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    include_dropped: bool = False
    statuses: tuple[str, ...] = ("ok",)
    where: dict[str, Any] = Field(default_factory=dict)
    min_scores: dict[str, float] = Field(default_factory=dict)
    max_scores: dict[str, float] = Field(default_factory=dict)
    predicate: Callable[[dict[str, Any]], bool] | None = None

    @field_validator("where")
    @classmethod
    def _where(cls, v: dict[str, Any]) -> dict[str, Any]:
        known = [c for c in SHARD_SCHEMA.names if c != "image"]
        for col in v:
            if col not in known:
                raise ValueError(f"unknown column {col!r}; expected one of {known}")
        return v

    @field_validator("min_scores", "max_scores")
    @classmethod
    def _scores(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            if name not in SCORE_NAMES:
                raise ValueError(f"unknown score {name!r}; expected one of {list(SCORE_NAMES)}")
        return v

    def matches(self, row: Mapping[str, Any]) -> bool:
        """True if `row` (a metadata dict, as read from a shard) is selected."""
        if row.get("status") not in self.statuses:
            return False
        if not self.include_dropped and not row.get("kept"):
            return False
        for col, want in self.where.items():
            have = row.get(col)
            wanted = list(want) if isinstance(want, list | tuple | set | frozenset) else [want]
            if col in _LIST_COLUMNS:
                if not set(have or ()) & set(wanted):
                    return False
            elif have not in wanted:
                return False
        scores = row.get("scores") or {}
        for name, bound in self.min_scores.items():
            value = scores.get(name)
            if value is None or value < bound:
                return False
        for name, bound in self.max_scores.items():
            value = scores.get(name)
            if value is None or value > bound:
                return False
        return self.predicate is None or bool(self.predicate(dict(row)))


def make_selection(
    selection: Selection | None = None,
    *,
    include_dropped: bool | None = None,
    where: Mapping[str, Any] | None = None,
    min_scores: Mapping[str, float] | None = None,
    max_scores: Mapping[str, float] | None = None,
    predicate: Callable[[dict[str, Any]], bool] | None = None,
) -> Selection:
    """A Selection from keyword arguments (merged over `selection` if given); ConfigError on bad input."""
    base = selection.model_dump() if selection is not None else {}
    updates = {
        "include_dropped": include_dropped,
        "where": dict(where) if where is not None else None,
        "min_scores": dict(min_scores) if min_scores is not None else None,
        "max_scores": dict(max_scores) if max_scores is not None else None,
        "predicate": predicate,
    }
    base.update({k: v for k, v in updates.items() if v is not None})
    try:
        return Selection(**base)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"{loc}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")
        raise ConfigError("; ".join(lines)) from None
