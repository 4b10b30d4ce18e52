"""The in-process SQLite write gate: writers take turns, readers never wait, nothing leaks."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from castiel_sync.store.write_gate import GatedConnection, WriteGate, gate_for


def _connect(path: Path) -> GatedConnection:
    conn = sqlite3.connect(path, factory=GatedConnection, check_same_thread=False)
    assert isinstance(conn, GatedConnection)
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "gate.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (n INTEGER UNIQUE)")
    return path


def test_a_writer_waits_for_the_gate_and_readers_do_not(db: Path) -> None:
    first, second = _connect(db), _connect(db)
    first.execute("INSERT INTO t VALUES (1)")  # holds the gate until its transaction ends
    assert first._holds_gate
    assert second.execute("SELECT count(*) FROM t").fetchone() == (0,)  # no wait to read
    done = threading.Event()

    def write() -> None:
        second.execute("INSERT INTO t VALUES (2)")
        second.commit()
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert not done.wait(0.2)  # queued on the gate, not failing in SQLite's busy handler
    first.commit()
    thread.join(5)
    assert done.is_set()
    assert not first._holds_gate and not second._holds_gate
    assert sorted(n for (n,) in first.execute("SELECT n FROM t")) == [1, 2]


def test_gate_comes_back_after_rollback_close_and_a_failed_statement(db: Path) -> None:
    gate = gate_for(str(db))
    conn = _connect(db)
    conn.execute("INSERT INTO t VALUES (1)")
    conn.rollback()
    assert not conn._holds_gate
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("INSERT INTO missing VALUES (1)")  # fails before any transaction
    assert not conn._holds_gate
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()  # closed mid-transaction
    gate.acquire(timeout=1)  # free again: would time out if any of the above had leaked it
    gate.release()


def test_execute_at_commit_runs_inside_commit_and_is_dropped_on_rollback(db: Path) -> None:
    conn = _connect(db)
    conn.execute_at_commit("INSERT INTO t VALUES (?)", [(1,), (2,)])
    assert not conn._holds_gate  # nothing written, nothing held before the COMMIT
    conn.commit()
    conn.execute_at_commit("INSERT INTO t VALUES (?)", [(3,)])
    conn.rollback()
    conn.commit()
    assert sorted(n for (n,) in conn.execute("SELECT n FROM t")) == [1, 2]
    conn.execute_at_commit("INSERT INTO t VALUES (?)", [(4,), (1,)])  # 1 is taken
    with pytest.raises(sqlite3.IntegrityError):
        conn.commit()
    conn.rollback()
    assert not conn._holds_gate
    assert sorted(n for (n,) in conn.execute("SELECT n FROM t")) == [1, 2]


def test_waiters_are_served_in_arrival_order_and_time_out_as_sqlite_does() -> None:
    gate = WriteGate()
    gate.acquire()
    order: list[int] = []
    threads = []
    for n in range(5):
        arrived = threading.Event()

        def wait(n: int = n, arrived: threading.Event = arrived) -> None:
            arrived.set()
            gate.acquire()
            order.append(n)
            gate.release()

        thread = threading.Thread(target=wait)
        thread.start()
        arrived.wait()
        # Each waiter draws its ticket before the next one starts.
        while gate._next != n + 2:
            threading.Event().wait(0.001)
        threads.append(thread)
    gate.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]

    gate.acquire()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        gate.acquire(timeout=0.05)
    gate.release()  # the abandoned ticket is skipped: the gate is free
    gate.acquire(timeout=0.5)
    gate.release()
