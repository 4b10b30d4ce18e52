"""One writer at a time per SQLite file in this process, handed over in turn.

SQLite lets one connection write at a time. A second writer waits in SQLite's busy
handler, which sleeps 1, 2, 5, 10 ... 100 ms between tries whether or not the lock came
free meanwhile. In one process the application's connections (aiosqlite: a thread each)
and the embedded bus's writer thread all write the same file, so under load they slept
through most of the gaps between each other's commits: in the bus benchmark's pipeline
(outbox commits, relay, consumer, acks) the bus's writer spent a third of its time asleep.

The gate is a first-come-first-served lock per database file, taken in the connection's
own thread (never on the event loop): a connection takes it just before the first
statement that may write and gives it back as soon as its transaction is over (commit,
rollback, close, or a statement that left no transaction open). Every connection of the
store's engines and of the bus's writer thread is a :class:`GatedConnection` (the
``factory`` of ``sqlite3.connect``). Other processes still meet in SQLite's busy
handler. A wait longer than the busy timeout fails as SQLite would: ``database is locked``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

#: As the store's ``PRAGMA busy_timeout``.
TIMEOUT_SECONDS = 30.0

# Statements that never write. Anything else (DML, DDL, BEGIN IMMEDIATE, a CTE that may
# update) takes the gate: taking it for a read only costs the wait.
_READS = ("SELECT", "PRAGMA", "EXPLAIN", "COMMIT", "ROLLBACK", "END")


class WriteGate:
    """A lock handed to its waiters in the order they came (``threading.Lock`` is not:
    a thread that takes it back at once after releasing it starves the others)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next = 0  # the ticket the next comer draws
        self._serving = 0  # the ticket that holds the lock (free when == _next)
        self._abandoned: set[int] = set()

    def acquire(self, timeout: float = TIMEOUT_SECONDS) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            deadline = time.monotonic() + timeout
            while self._serving != ticket:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._abandoned.add(ticket)
                    raise sqlite3.OperationalError("database is locked (in-process write gate)")
                self._cond.wait(remaining)

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            while self._serving in self._abandoned:
                self._abandoned.discard(self._serving)
                self._serving += 1
            self._cond.notify_all()


_GATES: dict[str, WriteGate] = {}
_GATES_GUARD = threading.Lock()


def gate_for(database: str) -> WriteGate:
    """The process's gate of the SQLite file ``database`` (a path)."""
    key = os.path.realpath(database)
    with _GATES_GUARD:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = WriteGate()
        return gate


def _writes(sql: str) -> bool:
    return not sql.lstrip()[:8].upper().startswith(_READS)


class GatedConnection(sqlite3.Connection):
    """A sqlite3 connection that holds its file's :class:`WriteGate` while it writes."""

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self._gate = gate_for(os.fsdecode(database))
        self._holds_gate = False
        self._at_commit: list[tuple[str, list[tuple[Any, ...]]]] = []

    def execute_at_commit(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run ``executemany(sql, rows)`` just before this transaction's COMMIT, in the
        same call. The outbox writes its events so: a transaction whose only write is
        its events then holds the write lock for this one call, not across the event
        loop's round trips between its INSERT and its COMMIT."""
        self._at_commit.append((sql, rows))

    def _before(self, sql: str) -> None:
        if not self._holds_gate and _writes(sql):
            self._gate.acquire()
            self._holds_gate = True

    def _after(self) -> None:
        if self._holds_gate and not self.in_transaction:
            self._holds_gate = False
            self._gate.release()

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        return super().cursor(factory or GatedCursor)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def commit(self) -> None:
        pending, self._at_commit = self._at_commit, []
        try:
            for sql, rows in pending:
                self.executemany(sql, rows)
            super().commit()
        finally:
            self._after()

    def rollback(self) -> None:
        self._at_commit = []
        try:
            super().rollback()
        finally:
            self._after()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._holds_gate:
                self._holds_gate = False
                self._gate.release()


class GatedCursor(sqlite3.Cursor):
    connection: GatedConnection

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        self.connection._before(sql)
        try:
            return super().execute(sql, parameters)
        finally:
            self.connection._after()

    def executemany(self, sql: str, parameters: Any, /) -> Any:  # type: ignore[override]
        self.connection._before(sql)
        try:
            return super().executemany(sql, parameters)
        finally:
            self.connection._after()


def is_file_database(database: str | None, url: str) -> bool:
    """Whether a SQLite URL (and its ``database`` part) names a file, not memory."""
    return database not in (None, "", ":memory:") and "mode=memory" not in url


__all__ = ["TIMEOUT_SECONDS", "GatedConnection", "WriteGate", "gate_for", "is_file_database"]
