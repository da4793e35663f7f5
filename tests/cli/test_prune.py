"""``stactools-ingest prune``: delete the items whose assets an inventory no longer lists.

A dry run by default, printing what it would delete; ``--apply`` deletes, through the same
Delete path as the load topic's messages. Run as a user runs it (a subprocess) on a real pgstac.
"""

from __future__ import annotations

import json

from factories import collection, item
from test_run import cli

COLL = "pr"


def _load(pgstac, tmp_path, n: int = 5) -> None:
    docs = tmp_path / "docs.ndjson"
    lines = [collection(COLL)] + [item(f"p{i}", COLL, x=i * 10) for i in range(n)]
    docs.write_text("".join(json.dumps(d) + "\n" for d in lines))
    assert cli("run", str(docs), "--dsn", pgstac.dsn, "-q").returncode == 0


def _inventory(tmp_path, item_ids: list[str], extra: tuple[str, ...] = ()) -> str:
    # one asset of each kept item is enough to keep it; comments and blank lines are skipped
    path = tmp_path / "inventory.txt"
    hrefs = [f"s3://bucket/{COLL}/{i}/B01.tif" for i in item_ids]
    path.write_text("# listed today\n\n" + "".join(h + "\n" for h in [*hrefs, *extra]))
    return str(path)


def test_a_dry_run_prints_what_it_would_delete_and_deletes_nothing(pgstac, tmp_path):
    _load(pgstac, tmp_path)
    keep = _inventory(tmp_path, ["p0", "p2", "p4"], extra=("s3://bucket/elsewhere.tif",))
    result = cli("prune", "--collection", COLL, "--keep", keep, "--dsn", pgstac.dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["p1", "p3"]
    assert "would delete 2 of 5 items" in result.stderr
    assert len(pgstac.item_ids(COLL)) == 5


def test_apply_deletes_them_and_a_second_prune_finds_nothing(pgstac, tmp_path):
    _load(pgstac, tmp_path)
    keep = _inventory(tmp_path, ["p0", "p2", "p4"])
    result = cli("prune", "--collection", COLL, "--keep", keep, "--apply", "--dsn", pgstac.dsn)
    assert result.returncode == 0, result.stderr
    assert "deleted 2 of 5 items" in result.stderr
    assert pgstac.item_ids(COLL) == ["p0", "p2", "p4"]
    again = cli("prune", "--collection", COLL, "--keep", keep, "--json", "--dsn", pgstac.dsn)
    assert json.loads(again.stdout) == {
        "collection": COLL,
        "items": 3,
        "to_delete": 0,
        "without_assets": 0,
        "deleted": 0,
        "applied": False,
    }


def test_an_inventory_that_would_delete_everything_is_refused(pgstac, tmp_path):
    _load(pgstac, tmp_path)
    keep = _inventory(tmp_path, [], extra=("s3://other-bucket/x.tif",))
    result = cli("prune", "--collection", COLL, "--keep", keep, "--apply", "--dsn", pgstac.dsn)
    assert result.returncode == 2
    assert "would delete every item" in result.stderr and "--allow-all" in result.stderr
    assert len(pgstac.item_ids(COLL)) == 5
    forced = cli(
        "prune", "--collection", COLL, "--keep", keep, "--apply", "--allow-all",
        "--dsn", pgstac.dsn,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert pgstac.item_ids(COLL) == []


def test_an_empty_inventory_or_unknown_collection_is_an_error(pgstac, tmp_path):
    _load(pgstac, tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    result = cli("prune", "--collection", COLL, "--keep", str(empty), "--dsn", pgstac.dsn)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "lists no hrefs" in result.stderr
    keep = _inventory(tmp_path, ["p0"])
    unknown = cli("prune", "--collection", "nope", "--keep", keep, "--dsn", pgstac.dsn)
    assert unknown.returncode == 2
    assert "no collection 'nope'" in unknown.stderr
    missing = cli("prune", "--collection", COLL, "--keep", "/no/such.txt", "--dsn", pgstac.dsn)
    assert missing.returncode != 0 and "no such file" in missing.stderr
    assert len(pgstac.item_ids(COLL)) == 5


def test_items_without_assets_are_kept_and_counted(pgstac, tmp_path):
    docs = tmp_path / "docs.ndjson"
    bare = item("bare", COLL)
    bare["assets"] = {}
    lines = [collection(COLL), item("listed", COLL), item("gone", COLL, x=50), bare]
    docs.write_text("".join(json.dumps(d) + "\n" for d in lines))
    assert cli("run", str(docs), "--dsn", pgstac.dsn, "-q").returncode == 0
    keep = _inventory(tmp_path, ["listed"])
    result = cli(
        "prune", "--collection", COLL, "--keep", keep, "--apply", "--json", "--dsn", pgstac.dsn
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["without_assets"] == 1
    assert pgstac.item_ids(COLL) == ["bare", "listed"]
