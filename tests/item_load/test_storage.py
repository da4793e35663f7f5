"""How the rows ItemLoad writes are stored: lz4 TOAST compression unless told otherwise.

pglz, PostgreSQL's default, spends more of the server's time compressing item content than
parsing it (a COPY of 20,000 realistic items: 1.0-1.4 s with pglz, 0.7-0.9 s with lz4 here);
lz4 also decompresses several times faster for every search that reads the items back.
"""

from __future__ import annotations

import pytest
from factories import COLL, failed_ids, item, sns_envelope, sqs_record

from item_load import handler as load_handler


def _compression(pgstac) -> set[str | None]:
    with pgstac.connect() as conn:
        rows = conn.execute("SELECT DISTINCT pg_column_compression(content) FROM items").fetchall()
    return {method for (method,) in rows}


def _big_items(n: int) -> list[dict]:
    # 12 assets: ~2.5 KB of content, over the size at which PostgreSQL compresses a row.
    return [item(f"stored-{i}", n_assets=12) for i in range(n)]


def test_item_content_is_stored_with_lz4(with_collection, load):
    result = load([sqs_record(sns_envelope(doc)) for doc in _big_items(5)])
    assert failed_ids(result) == set()
    assert _compression(with_collection) == {"lz4"}


def test_the_server_setting_keeps_the_database_default(with_collection, load, monkeypatch):
    monkeypatch.setattr(load_handler.processor, "toast_compression", "server")
    with with_collection.connect() as conn:
        (default,) = conn.execute("SHOW default_toast_compression").fetchone()
    result = load([sqs_record(sns_envelope(doc)) for doc in _big_items(5)])
    assert failed_ids(result) == set()
    assert _compression(with_collection) == {default}


def test_the_setting_reads_from_the_environment(monkeypatch):
    from item_load.settings import LoadSettings

    assert LoadSettings().toast_compression == "lz4"
    monkeypatch.setenv("TOAST_COMPRESSION", "server")
    assert LoadSettings().toast_compression == "server"
    monkeypatch.setenv("TOAST_COMPRESSION", "zstd")
    with pytest.raises(ValueError, match="toast_compression"):
        LoadSettings()


def test_a_loaded_collection_and_its_items_read_back_unchanged(with_collection, load):
    docs = _big_items(3)
    assert failed_ids(load([sqs_record(sns_envelope(doc)) for doc in docs])) == set()
    with with_collection.connect() as conn:
        got = {
            row[0]["id"]: row[0]
            for row in conn.execute(
                "SELECT content_hydrate(i, c) FROM items i JOIN collections c ON c.id = %s",
                (COLL,),
            ).fetchall()
        }
    for doc in docs:
        assert got[doc["id"]]["assets"] == doc["assets"]
        assert got[doc["id"]]["properties"]["datetime"] == doc["properties"]["datetime"]
