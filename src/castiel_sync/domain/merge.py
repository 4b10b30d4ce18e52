"""Three-way merge per field, and the conflict modes.

Inputs, all in Castiel field space (external records already mapped inbound): the *base*
(the mapped fields as both sides last agreed), Castiel's current data and the external
record's current data. Each field is compared on each side against the base:

- ``unchanged`` (equal to the base), ``changed``, ``added`` (absent from the base) or
  ``removed`` (absent now, present in the base). Absent is not ``None``: ``None`` is a
  value (a cleared field). Callers pass complete views: a field the provider simply did not
  send must be filled from the base first, or it reads as removed.
- Equality is by value *and* JSON type (``1 == 1.0`` but ``1 != True``), as in
  :mod:`castiel_sync.domain.hashing`.

Rules, per field:

1. Neither side changed: nothing to do.
2. One side changed: that side wins, whatever the mode.
3. Both changed to the same value (or both removed it): no conflict, nothing to write.
4. Both changed, differently: the mode decides.

   - ``castiel_wins`` / ``external_wins``: that side.
   - ``last_write_wins``: the side with the later modification time. **On a tie, or when
     either time is unknown, external wins**: the external system is the record's system
     of record (sync is inbound unless configured otherwise), and keeping its value costs
     no write to a rate-limited third-party API and cannot echo.
   - ``manual``: a :class:`Conflict`; the shard keeps its Castiel value meanwhile, nothing
     is written either way, and the field keeps its old base so the next sync finds the
     same conflict (the caller de-duplicates) until :func:`resolve_conflict` settles it.

Every field gets a :class:`FieldDecision` for the record's history.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from castiel_sync.domain.config import ConflictMode
from castiel_sync.domain.hashing import canonical_json
from castiel_sync.domain.paths import MISSING, compile_path

__all__ = [
    "Change",
    "Conflict",
    "FieldDecision",
    "MergeResult",
    "Resolution",
    "Winner",
    "resolve_conflict",
    "three_way_merge",
]

Change = Literal["unchanged", "changed", "added", "removed"]
Winner = Literal["castiel", "external", "both", "none", "pending", "admin"]
Choice = Literal["castiel", "external", "value"]


def same(a: Any, b: Any) -> bool:
    """Equal by value and JSON type; absent equals only absent."""
    if a is MISSING or b is MISSING:
        return a is b
    if a is b:
        return True
    if a != b:
        return False
    try:
        return canonical_json(a) == canonical_json(b)
    except (TypeError, ValueError):
        return type(a) is type(b)


def _change(base: Any, now: Any) -> Change:
    if same(base, now):
        return "unchanged"
    if now is MISSING:
        return "removed"
    if base is MISSING:
        return "added"
    return "changed"


@dataclass(frozen=True, slots=True)
class FieldDecision:
    """One field's merge decision, as kept in the record's history."""

    field: str
    castiel: Change
    external: Change
    winner: Winner
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {
            "field": self.field,
            "castiel": self.castiel,
            "external": self.external,
            "winner": self.winner,
            "reason": self.reason,
        }


def _jsonable(value: Any) -> dict[str, Any]:
    return {} if value is MISSING else {"value": value}


@dataclass(frozen=True, slots=True)
class Conflict:
    """A field both sides changed differently, under ``manual``. Values may be MISSING."""

    field: str
    base: Any
    castiel: Any
    external: Any
    castiel_change: Change
    external_change: Change
    castiel_modified_at: datetime | None = None
    external_modified_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """For storage: each side as ``{"value": v}``, or ``{}`` when absent."""
        return {
            "field": self.field,
            "base": _jsonable(self.base),
            "castiel": _jsonable(self.castiel),
            "external": _jsonable(self.external),
            "castielChange": self.castiel_change,
            "externalChange": self.external_change,
        }


@dataclass(slots=True)
class MergeResult:
    #: Castiel's data with every decision applied (what the shard should hold)
    merged: dict[str, Any]
    #: fields whose winning value must be written to the external system
    outbound_fields: list[str] = field(default_factory=list)
    #: fields whose value in Castiel changes (the external value won)
    inbound_fields: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    decisions: list[FieldDecision] = field(default_factory=list)
    #: the base to store once the writes succeed (conflicted fields keep their old base)
    next_base: dict[str, Any] = field(default_factory=dict)

    def _patch(self, fields: list[str]) -> dict[str, Any]:
        patch: dict[str, Any] = {}
        for name in fields:
            path = compile_path(name)
            value = path.get(self.merged)
            path.set(patch, None if value is MISSING else value)
        return patch

    def outbound_patch(self) -> dict[str, Any]:
        """The outbound fields in Castiel space, a removed field as ``None`` (clear it);
        map it with ``MappingPlan.outbound`` to get the external payload."""
        return self._patch(self.outbound_fields)

    def inbound_patch(self) -> dict[str, Any]:
        """The inbound fields in Castiel space, a removed field as ``None``."""
        return self._patch(self.inbound_fields)

    @property
    def changes(self) -> list[FieldDecision]:
        """Decisions for fields that at least one side changed."""
        return [d for d in self.decisions if d.winner != "none"]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _pick(
    mode: ConflictMode, castiel_at: datetime | None, external_at: datetime | None
) -> tuple[Winner, str]:
    if mode == "castiel_wins":
        return "castiel", "both changed; conflict mode castiel_wins"
    if mode == "external_wins":
        return "external", "both changed; conflict mode external_wins"
    if mode == "manual":
        return "pending", "both changed; manual resolution required, castiel value kept"
    if castiel_at is None or external_at is None:
        return "external", "both changed; last_write_wins without both times: external wins"
    if castiel_at > external_at:
        return "castiel", "both changed; last_write_wins: castiel changed later"
    if external_at > castiel_at:
        return "external", "both changed; last_write_wins: external changed later"
    return "external", "both changed; last_write_wins tie: external wins"


def three_way_merge(
    base: dict[str, Any],
    castiel: dict[str, Any],
    external: dict[str, Any],
    mode: ConflictMode,
    *,
    castiel_modified_at: datetime | None = None,
    external_modified_at: datetime | None = None,
    fields: Iterable[str] | None = None,
) -> MergeResult:
    """Merge per field (see the module docstring). ``fields`` are dotted Castiel paths,
    normally ``MappingPlan.castiel_fields``; by default the top-level keys of all three.
    The inputs are not modified."""
    if fields is None:
        fields = sorted(set(base) | set(castiel) | set(external))
    castiel_at, external_at = _utc(castiel_modified_at), _utc(external_modified_at)
    result = MergeResult(merged=copy.deepcopy(castiel))
    for name in fields:
        path = compile_path(name)
        was, ours, theirs = path.get(base), path.get(castiel), path.get(external)
        ours_change, theirs_change = _change(was, ours), _change(was, theirs)
        winner: Winner
        if ours_change == "unchanged" and theirs_change == "unchanged":
            winner, reason = "none", "unchanged on both sides"
        elif theirs_change == "unchanged":
            winner, reason = "castiel", "only castiel changed"
        elif ours_change == "unchanged":
            winner, reason = "external", "only external changed"
        elif same(ours, theirs):
            winner, reason = "both", "both sides made the same change"
        else:
            winner, reason = _pick(mode, castiel_at, external_at)
        result.decisions.append(FieldDecision(name, ours_change, theirs_change, winner, reason))

        agreed = ours  # the value both sides hold once the writes are done
        if winner == "castiel":
            result.outbound_fields.append(name)
        elif winner == "external":
            result.inbound_fields.append(name)
            agreed = theirs
            if theirs is MISSING:
                path.delete(result.merged)
            else:
                path.set(result.merged, copy.deepcopy(theirs))
        elif winner == "pending":
            agreed = was
            result.conflicts.append(
                Conflict(
                    name, was, ours, theirs, ours_change, theirs_change, castiel_at, external_at
                )
            )
        if agreed is not MISSING:
            path.set(result.next_base, copy.deepcopy(agreed))
    return result


@dataclass(frozen=True, slots=True)
class Resolution:
    """What settling a conflict means: the field's value from now on (MISSING: remove
    it), which sides must be written, and the decision for the history."""

    field: str
    value: Any
    write_castiel: bool
    write_external: bool
    decision: FieldDecision


def resolve_conflict(conflict: Conflict, choice: Choice, value: Any = MISSING) -> Resolution:
    """An admin's resolution: keep Castiel's value (written to the external system), take
    the external value (written to the shard), or give a ``value`` (``None`` clears the
    field) written to whichever side does not already hold it."""
    winner: Winner
    if choice == "castiel":
        if value is not MISSING:
            raise ValueError("a value is only given with choice 'value'")
        chosen, winner, reason = conflict.castiel, "castiel", "resolved manually: castiel value"
    elif choice == "external":
        if value is not MISSING:
            raise ValueError("a value is only given with choice 'value'")
        chosen, winner, reason = conflict.external, "external", "resolved manually: external value"
    elif choice == "value":
        if value is MISSING:
            raise ValueError("choice 'value' needs a value (None clears the field)")
        chosen, winner, reason = value, "admin", "resolved manually: value given by an admin"
    else:
        raise ValueError(f"choice must be 'castiel', 'external' or 'value', not {choice!r}")
    decision = FieldDecision(
        conflict.field, conflict.castiel_change, conflict.external_change, winner, reason
    )
    return Resolution(
        field=conflict.field,
        value=chosen,
        write_castiel=not same(chosen, conflict.castiel),
        write_external=not same(chosen, conflict.external),
        decision=decision,
    )
