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


def test_what_was_loaded_is_freed_in_later_waits_after_reading_ahead():
    import weakref

    class Parsed:
        pass

    loaded = [Parsed() for _ in range(3)]
    refs = [weakref.ref(p) for p in loaded]
    ahead = ReadAhead(_numbers(2), limit=10)
    ahead.discard(loaded)
    del loaded
    # reading ahead comes first, then freeing, one at a time
    assert [ahead.step() for _ in range(2)] == [True, True]
    assert all(r() is not None for r in refs)
    assert [ahead.step() for _ in range(4)] == [True, True, True, False]
    assert all(r() is None for r in refs)
    assert list(ahead) == [0, 1]


def test_what_run_reads_ahead_lands_as_the_load_stage_makes_it(pgstac, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from factories import collection, item

    from item_load.core import load_documents
    from item_load.messages import Document

    # GIVEN items whose geometries and times all differ, some of kinds only GEOS reads, some
    # invalid, more than one batch of them
    def items(coll: str) -> list[dict]:
        out = []
        for n in range(3500):
            doc = item(f"i{n}", coll, f"20{10 + n % 15}-0{1 + n % 9}-1{n % 10}T0{n % 10}:00:00Z")
            doc.pop("bbox")
            for asset in doc["assets"].values():  # the same content in either collection
                asset["href"] = asset["href"].replace(f"/{coll}/", "/")
            x, y = n % 170, n % 80
            if n % 7 == 0:
                doc["geometry"] = {"type": "Point", "coordinates": [x, y, n]}
            elif n % 7 == 1:
                doc["geometry"] = {
                    "type": "GeometryCollection",
                    "geometries": [{"type": "Point", "coordinates": [x, y]}],
                }
            elif n % 7 == 2:
                doc["properties"]["datetime"] = "not a time"
            else:
                doc["geometry"]["coordinates"][0][0] = [x, y]
                doc["geometry"]["coordinates"][0][-1] = [x, y]
            out.append(doc)
        return out

    path = tmp_path / "items.ndjson"
    path.write_text("\n".join(json.dumps(d) for d in [collection("ran"), *items("ran")]) + "\n")
    # WHEN run loads them (reading ahead), and the load stage loads the same items elsewhere
    cli = str(Path(sys.executable).parent / "stactools-ingest")
    result = subprocess.run(
        [cli, "run", str(path), "--dsn", pgstac.dsn, "--json", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr  # the items without a time are dead-lettered
    assert json.loads(result.stdout.splitlines()[-1])["dead_letters"] == 500
    with pgstac.connect() as conn:
        load_documents(conn, [Document("c", None, collection("direct"))])
        outcome = load_documents(
            conn, [Document(f"m{n}", None, d) for n, d in enumerate(items("direct"))]
        )
        assert len(outcome.failures) == 500
        # THEN every item that ran holds the same row as the load stage's copy of it
        differing = conn.execute(
            """
            SELECT count(*) FILTER (WHERE r.id IS NULL OR d.id IS NULL
                    OR NOT (r.geometry = d.geometry AND r.datetime = d.datetime
                            AND r.end_datetime = d.end_datetime
                            AND r.content - 'collection' = d.content - 'collection')),
                count(*)
            FROM (SELECT * FROM items WHERE collection = 'ran') r
            FULL JOIN (SELECT * FROM items WHERE collection = 'direct') d USING (id)
            """
        ).fetchone()
    assert differing == (0, 3000)


def test_big_records_are_read_ahead_by_their_size_not_their_count():
    ahead = ReadAhead(iter(["x" * 1000] * 10 + ["y"] * 10), limit=100, budget=2500, size=len)
    assert [ahead.step() for _ in range(4)] == [True, True, True, False]  # 3000 bytes held
    next(ahead)
    assert ahead.step()  # room again
    assert len(list(ahead)) == 19


def test_ctrl_c_while_reading_ahead_cancels_the_statement_and_is_not_lost(pgstac):
    def interrupted() -> bool:
        raise KeyboardInterrupt

    with ReadingConnection.connect(**pgstac.conninfo, autocommit=True) as conn:
        conn.idle_work = interrupted
        # WHEN Ctrl-C arrives while a long statement runs
        with pytest.raises(KeyboardInterrupt) as caught:
            conn.execute("SELECT pg_sleep(30)")
        # THEN the statement was cancelled (not waited out), as psycopg does on Ctrl-C
        assert isinstance(caught.value.__cause__, psycopg.errors.QueryCanceled)
        # AND when the statement fails anyway, the interruption is still what comes out
        with pytest.raises(KeyboardInterrupt):
            conn.execute("SELECT 1 / 0 FROM pg_sleep(0.2)")
        conn.idle_work = None
        assert conn.execute("SELECT 'next'").fetchone() == ("next",)


def test_an_interrupted_source_does_not_look_finished():
    def source():
        yield 1
        raise KeyboardInterrupt
        yield 2  # pragma: no cover

    ahead = ReadAhead(source(), limit=10)
    assert ahead.step()
    with pytest.raises(KeyboardInterrupt):
        ahead.step()
    assert next(ahead) == 1
    with pytest.raises(KeyboardInterrupt):  # not a clean end of input
        next(ahead)


def test_at_most_one_loaded_batch_waits_to_be_freed():
    import weakref

    class Parsed:
        pass

    # GIVEN loads whose waits never had time to free anything (reading ahead took them all)
    ahead = ReadAhead(_numbers(0), limit=10)
    refs = []
    for _ in range(5):
        batch = [Parsed() for _ in range(3)]
        refs.append([weakref.ref(p) for p in batch])
        ahead.discard(batch)
        del batch
    # THEN only the last batch is still held
    assert [sum(r() is not None for r in batch) for batch in refs] == [0, 0, 0, 0, 3]
