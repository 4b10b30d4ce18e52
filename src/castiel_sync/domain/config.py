"""An integration's configurable settings (the specification's "Configurable Settings").

These models validate what a tenant admin sends and what the engine reads. On the wire
they are camelCase, as the specification names them (``syncEnabled``); in Python,
snake_case.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from castiel_sync.domain.filters import FilterCondition

MIN_INTERVAL_MINUTES = 5
MAX_RECORDS_PER_SYNC = 1000
DEFAULT_CONCURRENT_SYNCS = 3
MAX_CONCURRENT_SYNCS = 10
# A shard type name ("c_contact"): catalog entities, mappings, match rules, API filters.
SHARD_TYPE_PATTERN = r"^c_[a-z][a-z0-9_]{0,62}$"

SyncDirection = Literal["inbound", "outbound", "bidirectional"]
ConflictMode = Literal["last_write_wins", "external_wins", "castiel_wins", "manual"]
MappingDirection = Literal["both", "inbound", "outbound"]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SyncFrequency(CamelModel):
    """``interval`` every N minutes (>= 5), ``daily`` at a UTC time, ``cron`` (5 fields,
    runs at least 5 minutes apart), or ``manual`` (on demand only)."""

    kind: Literal["interval", "daily", "cron", "manual"] = "manual"
    minutes: int | None = None
    at: str | None = Field(None, description="HH:MM (UTC), for daily")
    cron: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SyncFrequency:
        if self.kind == "interval":
            if self.minutes is None or self.minutes < MIN_INTERVAL_MINUTES:
                raise ValueError(
                    f"an interval needs minutes >= {MIN_INTERVAL_MINUTES} (got {self.minutes})"
                )
        elif self.kind == "daily":
            if self.at is None:
                self.at = "00:00"
            if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", self.at):
                raise ValueError(f"daily needs 'at' as HH:MM in UTC (got {self.at!r})")
        elif self.kind == "cron":
            if not self.cron or not croniter.is_valid(self.cron) or len(self.cron.split()) != 5:
                raise ValueError(f"not a valid 5-field cron expression: {self.cron!r}")
            runs = croniter(self.cron, datetime(2026, 1, 1, tzinfo=UTC))
            times = [runs.get_next(datetime) for _ in range(50)]
            gap = min(b - a for a, b in itertools.pairwise(times))
            if gap < timedelta(minutes=MIN_INTERVAL_MINUTES):
                raise ValueError(
                    f"cron {self.cron!r} runs more often than every {MIN_INTERVAL_MINUTES} minutes"
                )
        return self

    def next_after(self, moment: datetime) -> datetime | None:
        """The first due time strictly after ``moment``; None for manual."""
        if self.kind == "manual":
            return None
        if self.kind == "interval":
            assert self.minutes is not None
            return moment + timedelta(minutes=self.minutes)
        if self.kind == "daily":
            assert self.at is not None
            hour, minute = (int(part) for part in self.at.split(":"))
            due = moment.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
            return due if due > moment else due + timedelta(days=1)
        assert self.cron is not None
        nxt: datetime = croniter(self.cron, moment.astimezone(UTC)).get_next(datetime)
        return nxt


TransformName = Literal[
    "trim",
    "lower",
    "upper",
    "number",
    "integer",
    "boolean",
    "date",
    "datetime",
    "value_map",
    "join",
    "split",
    "default",
]


class TransformSpec(CamelModel):
    """A named transform with its arguments, e.g. ``{"name": "value_map", "args":
    {"map": {"Hot": "high"}}}``. A bare string in a mapping means no arguments."""

    name: TransformName
    args: dict[str, Any] = Field(default_factory=dict)


class FieldMapping(CamelModel):
    """``external`` and ``castiel`` are dotted paths (``BillingAddress.City`` ->
    ``address.city``). Transforms apply in order inbound, reversed outbound."""

    external: str = Field(min_length=1, max_length=200)
    castiel: str = Field(min_length=1, max_length=200)
    transforms: list[TransformSpec] = Field(default_factory=list)
    direction: MappingDirection = "both"

    @field_validator("transforms", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _compiles(self) -> FieldMapping:
        """Transform args, both paths, and (when used outbound) the reverse of every
        transform are checked here, so a mapping that cannot run is refused when saved."""
        from castiel_sync.domain.mapping import compile_mappings  # mapping imports this module

        compile_mappings([self])
        return self


class EntityMapping(CamelModel):
    entity: str = Field(min_length=1, max_length=100)
    shard_type: str = Field(pattern=SHARD_TYPE_PATTERN)
    direction: SyncDirection = "inbound"
    enabled: bool = True
    field_mappings: list[FieldMapping] = Field(default_factory=list)

    @model_validator(mode="after")
    def _targets_distinct(self) -> EntityMapping:
        """No two mappings may write the same (or an enclosing) path on one side."""
        from castiel_sync.domain.mapping import compile_mappings  # mapping imports this module

        compile_mappings(self.field_mappings)
        return self


class RetryPolicy(CamelModel):
    max_attempts: int = Field(3, ge=1, le=20)
    backoff_ms: int = Field(5000, ge=0, le=3_600_000)
    backoff_multiplier: float = Field(2.0, ge=1.0, le=10.0)

    def delay_ms(self, attempt: int) -> int:
        """Delay before retry number ``attempt`` (1-based)."""
        return int(self.backoff_ms * self.backoff_multiplier ** (attempt - 1))


class WriteBackConfig(CamelModel):
    enabled: bool = False
    mode: Literal["realtime"] = "realtime"
    entities: list[str] = Field(default_factory=list)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)


class MatchRule(CamelModel):
    """Link a record to an existing shard of ``shard_type`` whose ``fields`` are all equal
    (case-insensitively), instead of creating a duplicate."""

    shard_type: str = Field(pattern=SHARD_TYPE_PATTERN)
    fields: list[str] = Field(min_length=1)


class IntegrationSettings(CamelModel):
    """What a tenant admin configures on an integration instance."""

    sync_enabled: bool = False
    sync_direction: SyncDirection = "inbound"
    sync_frequency: SyncFrequency = Field(default_factory=SyncFrequency)
    pull_filters: dict[str, list[FilterCondition]] = Field(default_factory=dict)
    entity_mappings: list[EntityMapping] = Field(default_factory=list)
    conflict_resolution: ConflictMode = "last_write_wins"
    allowed_shard_types: list[str] = Field(default_factory=list)
    write_back: WriteBackConfig = Field(default_factory=WriteBackConfig)
    match_rules: list[MatchRule] = Field(default_factory=list)
    delete_grace_seconds: int = Field(0, ge=0, le=30 * 24 * 3600)
