"""Declarative base, portable column types and the engine factory.

One metadata serves SQLite and PostgreSQL: JSON becomes JSONB on PostgreSQL, and
datetimes are always timezone-aware UTC on the way out (SQLite stores them naive).
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, MetaData, event, make_url
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from castiel_sync.store import write_gate

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both backends."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A new id: a time-ordered UUID (version 7, RFC 9562) as the usual 36-character
    string. Ids made one after another in a process sort in creation order (a 12-bit
    counter under the millisecond, carrying into it; monotonic even when the clock steps
    back), so B-tree inserts on every table's primary key (and on indexes of foreign
    ids) append at the right edge instead of landing on random pages: on SQLite and
    PostgreSQL alike. The 62 low bits are random (``os.urandom``): ids stay unguessable
    beyond their creation time."""
    global _last_stamp
    with _id_lock:
        stamp = time.time_ns() // 1_000_000 << 12
        if stamp <= _last_stamp:
            stamp = _last_stamp + 1
        _last_stamp = stamp
        if not _random_pool:
            _refill_random_pool()
        tail = _random_pool.pop()
    h = "%032x" % ((stamp >> 12) << 80 | _V7 | (stamp & 0xFFF) << 64 | _VARIANT | tail)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_ids(count: int) -> list[str]:
    """``count`` new ids at once: what ``count`` calls of :func:`new_id` return (one
    clock reading, one ``os.urandom`` call), for bulk inserts on the sync hot path."""
    global _last_stamp
    if count <= 0:
        return []
    with _id_lock:
        first = time.time_ns() // 1_000_000 << 12
        if first <= _last_stamp:
            first = _last_stamp + 1
        _last_stamp = first + count - 1
    # 8 random bytes per id, the first two bits the RFC variant (10), hexed at once
    tails = bytearray(os.urandom(8 * count))
    tails[0::8] = bytes((b & 0x3F) | 0x80 for b in tails[0::8])
    hexed = tails.hex()
    ids = []
    ms_text, ms_last = "", -1
    for n in range(count):
        stamp = first + n
        ms = stamp >> 12
        if ms != ms_last:
            ms_text, ms_last = f"{ms:012x}", ms
        t = hexed[16 * n : 16 * n + 16]
        ids.append(f"{ms_text[:8]}-{ms_text[8:]}-7{stamp & 0xFFF:03x}-{t[:4]}-{t[4:]}")
    return ids


_V7 = 0x7 << 76
_VARIANT = 0b10 << 62
_id_lock = threading.Lock()
_last_stamp = 0
#: 62-bit random tails, drawn from os.urandom 512 at a time (one system call, not one
#: per id); emptied in a forked child so parent and child never share them
_random_pool: list[int] = []


def _refill_random_pool() -> None:
    chunk = os.urandom(8 * 512)
    _random_pool.extend(
        int.from_bytes(chunk[i : i + 8], "big") >> 2 for i in range(0, len(chunk), 8)
    )


def _after_fork() -> None:
    global _id_lock
    _id_lock = threading.Lock()
    _random_pool.clear()


os.register_at_fork(after_in_child=_after_fork)


def json_dumps(value: Any) -> str:
    """JSON columns' serializer: orjson (several times faster than the standard library on
    the outbox and relay hot paths); the standard library for what orjson refuses
    (integers past 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    """JSON columns' deserializer (the standard library reads what orjson refuses, such as
    the NaN literal older rows may hold)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


#: What every engine of the store is created with (the bus's own SQLite engines too).
JSON_ENGINE_OPTIONS: dict[str, Any] = {
    "json_serializer": json_dumps,
    "json_deserializer": json_loads,
}


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and enforced foreign keys."""
    for option, value in JSON_ENGINE_OPTIONS.items():
        kwargs.setdefault(option, value)
    if url.startswith("sqlite"):
        # A copy: the caller's dict is not ours to add the factory to.
        connect_args = kwargs["connect_args"] = dict(kwargs.get("connect_args", {"timeout": 30}))
        if write_gate.is_file_database(make_url(url).database, url):
            connect_args.setdefault("factory", write_gate.GatedConnection)
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
