"""``run`` reads its input ahead while it waits on PostgreSQL, in the same thread.

What a user relies on: records come out in their order, an error comes out where it happened,
and the database's answers are the same as without the reading (real server, real waits).
"""

from __future__ import annotations

import psycopg
import pytest

from stactools_ingest.read_ahead import ReadAhead, ReadingConnection


def _numbers(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"line {i} is unreadable")
        yield i


def test_records_come_out_in_order_however_many_were_read_ahead():
    ahead = ReadAhead(_numbers(10), limit=4)
    assert next(ahead) == 0
    assert [ahead.step() for _ in range(6)] == [True] * 4 + [False] * 2  # at most 4 ahead
    assert list(ahead) == list(range(1, 10))
    assert not ahead.step()  # nothing more to read


def test_an_error_read_ahead_comes_out_where_it_happened():
    # GIVEN a source that fails at its fourth record, read ahead past it
    ahead = ReadAhead(_numbers(10, fail_at=3), limit=100)
    while ahead.step():
        pass
    # THEN the three records before it come out first, then the error, then nothing
    assert [next(ahead), next(ahead), next(ahead)] == [0, 1, 2]
    with pytest.raises(ValueError, match="line 3 is unreadable"):
        next(ahead)
    assert list(ahead) == []


def test_a_connection_reads_ahead_while_the_server_works(pgstac):
    ahead = ReadAhead(_numbers(100_000), limit=100_000)
    with ReadingConnection.connect(**pgstac.conninfo, autocommit=True) as conn:
        conn.idle_work = ahead.step
        # WHEN a statement keeps the server busy for a while
        (answer,) = conn.execute(
            "SELECT count(*) FROM pg_sleep(0.3), generate_series(1, 7)"
        ).fetchone()
        # THEN its answer is the server's, and records were read meanwhile, in order
        assert answer == 7
        read = len(ahead._ahead)
        assert read > 1000, f"only {read} records read ahead in 0.3 s"
        assert list(ahead)[:3] == [0, 1, 2]
        # AND once there is nothing left to read, waits still end when the server answers
        assert conn.execute("SELECT 41 + 1 FROM pg_sleep(0.05)").fetchone() == (42,)
        # AND an error from the server is the server's, and the connection goes on
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)


def test_a_copy_through_a_reading_connection_lands_whole(pgstac):
    ahead = ReadAhead(_numbers(1_000_000), limit=1_000_000)
    rows = [(i, "x" * 500) for i in range(20_000)]
    with ReadingConnection.connect(**pgstac.conninfo, autocommit=True) as conn:
        conn.idle_work = ahead.step
        conn.execute("CREATE TEMP TABLE t (n integer, s text)")
        with conn.cursor() as cur, cur.copy("COPY t (n, s) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        assert conn.execute("SELECT count(*), sum(n), min(s) = max(s) FROM t").fetchone() == (
            20_000,
            sum(range(20_000)),
            True,
        )


def test_ctrl_c_while_reading_ahead_leaves_the_connection_usable(pgstac):
    calls = 0

    def work() -> bool:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return True

    with ReadingConnection.connect(**pgstac.conninfo, autocommit=True) as conn:
        conn.idle_work = work
        # WHEN Ctrl-C arrives while a wait reads ahead
        with pytest.raises(KeyboardInterrupt):
            conn.execute("SELECT pg_sleep(0.2)")
        # THEN reading stopped there, and the statement's answer did not stay on the line
        assert calls == 5
        conn.idle_work = None
        assert conn.execute("SELECT 'next'").fetchone() == ("next",)
