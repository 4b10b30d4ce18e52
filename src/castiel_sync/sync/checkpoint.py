"""The typed per-entity checkpoint kept in ``integrations.cursors[entity]``.

``EntityCheckpoint`` holds the incremental state of the last *complete* run (``since``:
the high-water mark, the newest modification time seen, plus ``since_ids``: the records
at exactly that instant, the tie-breaker; or the provider's ``delta_token``) and, while a
run is going on, its position (:class:`RunState`): the page continuation the provider gave
(``page_cursor``) and how many records of that page are already applied (``skip``; a
provider page can hold more records than one job may apply).

Correctness does not rest on skipping: the next incremental run asks for records modified
at or after ``since - look_back`` (inclusive), so records sharing the high-water instant,
on either side of a page or job boundary, are fetched again and recognised as unchanged
by fingerprint. ``seq`` increases with every committed page; a job that finds a different
``seq`` (or run) than it started from has been overtaken and stops.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

CHECKPOINT_VERSION = 1


class RunState(BaseModel):
    id: str
    type: Literal["full", "incremental"]
    started_at: datetime
    #: the lower bound this run fetches from (None: everything)
    since: datetime | None = None
    delta_token: str | None = None
    page_cursor: str | None = None
    skip: int = 0
    #: the page size ``page_cursor``'s page was fetched with (a resumed page must be
    #: fetched again with the same size for ``skip`` to mean the same records)
    page_limit: int | None = None
    #: newest modification time seen so far in this run, and the ids at that instant
    hwm: datetime | None = None
    hwm_ids: list[str] = Field(default_factory=list)
    next_delta_token: str | None = None
    #: the execution currently working on the run
    owner: str | None = None
    pages: int = 0
    records: int = 0


class EntityCheckpoint(BaseModel):
    v: int = CHECKPOINT_VERSION
    seq: int = 0
    since: datetime | None = None
    since_ids: list[str] = Field(default_factory=list)
    delta_token: str | None = None
    last_full_sync_at: datetime | None = None
    last_run_id: str | None = None
    #: the field mappings' fingerprint the last complete full run applied to every record
    plan_key: str | None = None
    run: RunState | None = None

    @classmethod
    def load(cls, cursors: dict[str, Any], entity: str) -> EntityCheckpoint:
        raw = cursors.get(entity)
        return cls.model_validate(raw) if isinstance(raw, dict) else cls()

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def advance_hwm(
    hwm: datetime | None, ids: list[str], moments: list[tuple[datetime, str]]
) -> tuple[datetime | None, list[str]]:
    """Fold records' ``(modified_at, external_id)`` into a high-water mark and its ids."""
    best, best_ids = hwm, list(ids)
    for moment, external_id in moments:
        if best is None or moment > best:
            best, best_ids = moment, [external_id]
        elif moment == best and external_id not in best_ids:
            best_ids.append(external_id)
    return best, best_ids[-200:]


__all__ = ["CHECKPOINT_VERSION", "EntityCheckpoint", "RunState", "advance_hwm"]
