"""``stactools-ingest crawl`` on catalogs written by pystac: on disk, over http, to a stack."""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pystac
import pytest
from click.testing import CliRunner, Result
from hrefserver import serving as static_server
from moto_stack import STACK, Wrapped

from stactools_ingest.commands import crawl as crawl_command
from stactools_ingest.crawl import resolve

CRAWL = crawl_command.crawl
ITEMS = {"alpha": ["alpha-0", "alpha-1", "alpha-2"], "beta": ["beta-0", "beta-1"]}


def write_catalog(root: Path, items: dict[str, list[str]] = ITEMS) -> Path:
    """A pystac catalog: root -> alpha (3 items), root -> sub (a Catalog) -> beta (2 items).

    Self-contained, as pystac saves catalogs for distribution: every link and asset href is
    relative. Returns the root catalog.json.
    """
    catalog = pystac.Catalog("root", "a static catalog written by pystac")
    sub = pystac.Catalog("sub", "a catalog between the root and a collection")
    catalog.add_child(sub)
    for name, ids in items.items():
        extent = pystac.Extent(
            pystac.SpatialExtent([[0.0, 0.0, 5.0, 5.0]]),
            pystac.TemporalExtent([[datetime(2020, 1, 1, tzinfo=UTC), None]]),
        )
        coll = pystac.Collection(name, f"the {name} collection", extent, license="CC-BY-4.0")
        for k, item_id in enumerate(ids):
            n = k % 170
            coll.add_item(
                pystac.Item(
                    item_id,
                    geometry={
                        "type": "Polygon",
                        "coordinates": [[[n, 0], [n + 1, 0], [n + 1, 1], [n, 1], [n, 0]]],
                    },
                    bbox=[n, 0, n + 1, 1],
                    datetime=datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=k),
                    properties={"title": f"ünïcode {item_id} ✓"},
                )
            )
        (catalog if name == "alpha" else sub).add_child(coll)
    catalog.normalize_hrefs(str(root))
    for item in catalog.get_items(recursive=True):
        folder = os.path.dirname(item.get_self_href())
        item.add_asset("data", pystac.Asset(os.path.join(folder, f"{item.id}.tif")))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


class StaticFiles(SimpleHTTPRequestHandler):
    """A plain static file server, as `python -m http.server` serves a catalog; it counts the
    requests for each path."""

    hits: collections.Counter[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        super().do_GET()


@contextmanager
def serving(directory: Path, hits: collections.Counter[str] | None = None) -> Iterator[str]:
    """``directory`` served over http on 127.0.0.1."""
    counts: collections.Counter[str] = collections.Counter() if hits is None else hits

    class Files(StaticFiles):
        hits = counts

    with static_server(partial(Files, directory=str(directory))) as url:
        yield url


def killed_at_the_second(deployed):
    """An SNS client factory whose client dies at its second publish_batch, as a kill would."""
    calls = []

    def publish_batch(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return deployed.sns.publish_batch(**kwargs)

    return lambda: Wrapped(deployed.sns, publish_batch=publish_batch)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(CRAWL, list(args))


def summary(result: Result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def stored(pgstac, collection: str) -> dict[str, dict]:
    with pgstac.connect() as conn:
        rows = conn.execute(
            "SELECT items.id, content_hydrate(items, collections) FROM items "
            "JOIN collections ON items.collection = collections.id "
            "WHERE items.collection = %s ORDER BY items.id",
            (collection,),
        ).fetchall()
    return dict(rows)


def collection_ids(pgstac) -> list[str]:
    with pgstac.connect() as conn:
        return [r[0] for r in conn.execute("SELECT id FROM collections ORDER BY id")]


def test_a_catalog_on_disk_loads_collections_and_items_with_absolute_asset_hrefs(pgstac, tmp_path):
    # GIVEN a self-contained catalog written by pystac
    root = write_catalog(tmp_path / "stac")
    # WHEN it is crawled into pgstac
    result = invoke(str(root), "--dsn", pgstac.dsn, "--json")
    # THEN both collections and all five items landed; the catalogs were walked, not stored
    assert result.exit_code == 0, result.output
    s = summary(result)
    assert (s["collections_loaded"], s["items_loaded"], s["failed"]) == (2, 5, 0)
    assert collection_ids(pgstac) == ["alpha", "beta"]
    for name, ids in ITEMS.items():
        items = stored(pgstac, name)
        assert sorted(items) == ids
        for item_id, doc in items.items():
            # AND each asset href is the absolute path of the file next to its item
            expected = tmp_path / "stac" / ("sub/" if name == "beta" else "") / name / item_id
            assert doc["assets"]["data"]["href"] == str(expected / f"{item_id}.tif")
            # AND no link of the static tree (relative, pointing into the copy) was kept
            assert not [ln for ln in doc.get("links", []) if not ln["href"].startswith("/")]
            assert doc["properties"]["title"] == f"ünïcode {item_id} ✓"


def test_a_catalog_over_http_loads_with_urls_and_a_rerun_loads_nothing_twice(pgstac, tmp_path):
    # GIVEN the same catalog served over http by a plain static file server
    write_catalog(tmp_path / "stac")
    with serving(tmp_path / "stac") as url:
        # WHEN it is crawled from its URL
        first = invoke(f"{url}/catalog.json", "--dsn", pgstac.dsn, "--json")
        # THEN everything landed, with asset hrefs resolved against the items' URLs
        assert first.exit_code == 0, first.output
        assert summary(first)["items_loaded"] == 5
        alpha = stored(pgstac, "alpha")
        assert alpha["alpha-1"]["assets"]["data"]["href"] == f"{url}/alpha/alpha-1/alpha-1.tif"
        # AND crawling it again reads it again but changes nothing
        with pgstac.connect() as conn:
            before = conn.execute("SELECT max(xmin::text::bigint) FROM items").fetchone()[0]
        again = invoke(f"{url}/catalog.json", "--dsn", pgstac.dsn, "--json")
        assert again.exit_code == 0, again.output
        assert (summary(again)["items_loaded"], summary(again)["failed"]) == (0, 0)
        with pgstac.connect() as conn:
            after = conn.execute("SELECT max(xmin::text::bigint) FROM items").fetchone()[0]
        assert after == before  # no row was written again


def test_broken_links_are_reported_and_the_rest_loads(pgstac, tmp_path):
    # GIVEN a catalog with a missing item file, an item that is not JSON, a child link to
    # nowhere, and a child link back to the root (a cycle)
    root = write_catalog(tmp_path / "stac")
    (tmp_path / "stac/alpha/alpha-0/alpha-0.json").unlink()
    (tmp_path / "stac/sub/beta/beta-1/beta-1.json").write_text('{"type": "Feature", "id": ')
    doc = json.loads(root.read_text())
    doc["links"] += [
        {"rel": "child", "href": "./nowhere/catalog.json"},
        {"rel": "child", "href": "./catalog.json"},
    ]
    root.write_text(json.dumps(doc))
    # WHEN it is crawled
    result = invoke(str(root), "--dsn", pgstac.dsn, "--json")
    # THEN it finishes (exit 1: something failed), each problem named with the link's holder
    assert result.exit_code == 1, result.output
    s = summary(result)
    assert (s["items_loaded"], s["collections_loaded"], s["input_errors"]) == (3, 2, 3)
    assert f"alpha-0.json: {tmp_path}/stac/alpha/alpha-0/alpha-0.json: no such file" not in (
        result.stderr
    )  # the href is named once, not twice
    assert "alpha-0.json: no such file (item of " in result.stderr
    assert "beta-1.json: not valid JSON" in result.stderr
    assert "nowhere/catalog.json: no such file (child of " in result.stderr
    assert sorted(stored(pgstac, "alpha")) == ["alpha-1", "alpha-2"]
    assert sorted(stored(pgstac, "beta")) == ["beta-0"]


def test_an_unusable_root_is_one_line_and_nothing_starts(pgstac, tmp_path):
    (tmp_path / "item.json").write_text(json.dumps({"type": "Feature", "id": "x"}))
    for source, reason in [
        (tmp_path / "missing.json", "no such file"),
        (tmp_path / "item.json", "not a STAC Catalog or Collection (type='Feature')"),
    ]:
        result = invoke(str(source), "--dsn", pgstac.dsn)
        assert result.exit_code != 0
        assert reason in str(result.exception)
    assert collection_ids(pgstac) == []


def test_loading_catalogs_is_asked_for(pgstac, tmp_path):
    # GIVEN the catalog, crawled from its directory with --load-catalogs
    write_catalog(tmp_path / "stac")
    result = invoke(str(tmp_path / "stac"), "--dsn", pgstac.dsn, "--load-catalogs", "--json")
    # THEN the two catalogs are stored beside the collections, as Catalogs, without tree links
    assert result.exit_code == 0, result.output
    assert collection_ids(pgstac) == ["alpha", "beta", "root", "sub"]
    with pgstac.connect() as conn:
        root = conn.execute("SELECT content FROM collections WHERE id = 'root'").fetchone()[0]
    assert root["type"] == "Catalog" and root["links"] == []


def test_items_without_a_collection_take_the_one_above_them(pgstac, tmp_path):
    # GIVEN a collection whose item files have no 'collection' field (hand-written catalogs)
    root = write_catalog(tmp_path / "stac")
    for path in (tmp_path / "stac/alpha").glob("*/*.json"):
        doc = json.loads(path.read_text())
        del doc["collection"]
        path.write_text(json.dumps(doc))
    result = invoke(str(root), "--dsn", pgstac.dsn, "--json")
    assert result.exit_code == 0, result.output
    assert sorted(stored(pgstac, "alpha")) == ITEMS["alpha"]


@pytest.mark.parametrize(
    ("base", "href", "expected"),
    [
        ("/d/stac/catalog.json", "./a/collection.json", "/d/stac/a/collection.json"),
        ("/d/stac/a/collection.json", "../b/x.json", "/d/stac/b/x.json"),
        ("s3://bucket/stac/catalog.json", "./a/c.json", "s3://bucket/stac/a/c.json"),
        ("s3://bucket/stac/a/c.json", "../../x.json", "s3://bucket/x.json"),
        ("https://h/stac/catalog.json", "a/c.json", "https://h/stac/a/c.json"),
        ("https://h/stac/catalog.json", "https://o/x.json", "https://o/x.json"),
        ("https://h/stac/catalog.json", "/abs.json", "https://h/abs.json"),
        ("/d/catalog.json", "file:///e/x.json", "/e/x.json"),
    ],
)
def test_relative_links_resolve_against_their_document(base, href, expected):
    assert resolve(base, href) == expected


MANY = {"alpha": [f"alpha-{n:02d}" for n in range(20)], "beta": ["beta-0", "beta-1", "b2"]}
"""27 documents with their collections: three SNS batches of ten."""


@pytest.fixture
def killed_crawl(deployed, tmp_path, monkeypatch) -> Path:
    """A crawl of ``MANY`` to the stack, killed at its second publish_batch (after the first
    ten documents); returns the catalog's root. Publishing works again afterwards."""
    monkeypatch.setenv("STACTOOLS_INGEST_HOME", str(tmp_path / "home"))
    root = write_catalog(tmp_path / "stac", MANY)
    monkeypatch.setattr("stactools_ingest.aws_publish.sns_client", killed_at_the_second(deployed))
    assert invoke(str(root), "--stack", STACK).exit_code != 0
    monkeypatch.setattr("stactools_ingest.aws_publish.sns_client", lambda: deployed.sns)
    return root


def test_a_crawl_to_a_stack_publishes_collections_before_items_and_resumes(deployed, killed_crawl):
    # GIVEN a crawl of 27 documents to a stack, killed after its first batch
    root = killed_crawl
    first = deployed.published("load")
    # THEN what went first was the collection, then its items, in the catalog's order
    # (the root links the sub-catalog before alpha)
    assert [(d["type"], d["id"]) for d in first] == [
        ("Collection", "beta"),
        ("Feature", "beta-0"),
        ("Feature", "beta-1"),
        ("Feature", "b2"),
        ("Collection", "alpha"),
        *[("Feature", f"alpha-{n:02d}") for n in range(5)],
    ]
    # WHEN it runs again
    resumed = invoke(str(root), "--stack", STACK, "--json")
    assert resumed.exit_code == 0, resumed.output
    # THEN every document was published exactly once across both runs
    ids = [d["id"] for d in first + deployed.published("load")]
    assert sorted(ids) == sorted(["alpha", "beta", *MANY["alpha"], *MANY["beta"]])


def test_a_catalog_in_s3_loads_with_s3_hrefs(pgstac, tmp_path, aws_env):
    import boto3
    from moto import mock_aws

    # GIVEN the catalog copied to a bucket, as `aws s3 sync` would
    write_catalog(tmp_path / "stac")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="catalogs")
        for path in (tmp_path / "stac").rglob("*.json"):
            key = f"stac/{path.relative_to(tmp_path / 'stac')}"
            s3.put_object(Bucket="catalogs", Key=key, Body=path.read_bytes())
        # WHEN it is crawled from s3://
        result = invoke("s3://catalogs/stac/catalog.json", "--dsn", pgstac.dsn, "--json")
    # THEN it landed with asset hrefs in the bucket
    assert result.exit_code == 0, result.output
    assert summary(result)["items_loaded"] == 5
    beta = stored(pgstac, "beta")
    assert (
        beta["beta-1"]["assets"]["data"]["href"] == "s3://catalogs/stac/sub/beta/beta-1/beta-1.tif"
    )


def _add_links(path: Path, *links: dict) -> None:
    doc = json.loads(path.read_text())
    doc["links"] += list(links)
    path.write_text(json.dumps(doc))


def test_a_resumed_crawl_refuses_a_catalog_that_changed_before_its_checkpoint(
    deployed, killed_crawl
):
    # GIVEN a crawl to a stack killed after its first batch of ten documents
    root = killed_crawl
    deployed.published("load")
    # WHEN a document before that point breaks (the sub-catalog, read first), and it resumes
    (root.parent / "sub/catalog.json").write_text("{")
    resumed = invoke(str(root), "--stack", STACK)
    # THEN it refuses before publishing anything, rather than skip rows it never sent
    assert resumed.exit_code != 0
    assert "the source changed since checkpoint" in str(resumed.exception)
    assert deployed.published("load") == []


def test_documents_whose_hrefs_look_alike_when_shortened_all_publish(
    deployed, tmp_path, monkeypatch
):
    # GIVEN items under a path longer than reasons show (300 characters)
    monkeypatch.setenv("STACTOOLS_INGEST_HOME", str(tmp_path / "home"))
    deep = tmp_path / ("a" * 200) / ("b" * 200)
    root = write_catalog(deep, {"alpha": [f"alpha-{n:02d}" for n in range(25)]})
    # WHEN it is crawled to a stack
    result = invoke(str(root), "--stack", STACK, "--json")
    # THEN every document was published once
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["published"] == 26


def test_malformed_and_local_links_of_a_remote_catalog_are_problems_not_crashes(pgstac, tmp_path):
    # GIVEN a served catalog with a malformed asset href, a malformed child link, and item
    # links to local files (one holding a secret)
    root = write_catalog(tmp_path / "stac")
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"type": "Feature", "id": "secret", "token": "s3cr3t"}))
    item_path = tmp_path / "stac/alpha/alpha-1/alpha-1.json"
    doc = json.loads(item_path.read_text())
    doc["assets"]["data"]["href"] = "//[bad/x.tif"
    item_path.write_text(json.dumps(doc))
    _add_links(
        tmp_path / "stac/alpha/collection.json",
        {"rel": "item", "href": secret.as_uri()},
        {"rel": "item", "href": "file:///etc/hostname"},
    )
    _add_links(root, {"rel": "child", "href": "http://[::1/catalog.json"})
    with serving(tmp_path / "stac") as url:
        result = invoke(f"{url}/catalog.json", "--dsn", pgstac.dsn, "--json")
    # THEN the rest loaded, each bad link was reported, and no local file was read
    assert result.exit_code == 1, result.output
    assert sorted(stored(pgstac, "alpha")) == ITEMS["alpha"]
    assert stored(pgstac, "alpha")["alpha-1"]["assets"]["data"]["href"] == "//[bad/x.tif"
    assert f"{secret}: a remote catalog may not link to local files (item of " in result.stderr
    assert "/etc/hostname: a remote catalog may not link to local files" in result.stderr
    assert "a malformed child link (" in result.stderr
    assert "s3cr3t" not in result.output
    assert summary(result)["input_errors"] == 3


def test_a_catalog_with_two_collections_of_one_id_loads_the_first(pgstac, tmp_path):
    # GIVEN a sub-catalog with the id of a collection (and walked before it), crawled with
    # --load-catalogs
    root = write_catalog(tmp_path / "stac")
    sub = json.loads((tmp_path / "stac/sub/catalog.json").read_text())
    sub["id"] = "alpha"
    (tmp_path / "stac/sub/catalog.json").write_text(json.dumps(sub))
    result = invoke(str(root), "--dsn", pgstac.dsn, "--load-catalogs", "--json")
    # THEN the collection is kept and the catalog is reported, not loaded over it
    assert result.exit_code == 1
    assert "a Catalog with the id 'alpha' of " in result.stderr
    with pgstac.connect() as conn:
        kind = conn.execute("SELECT content->>'type' FROM collections WHERE id = 'alpha'")
        assert kind.fetchone()[0] == "Collection"


def test_names_with_spaces_unicode_hashes_and_percent_signs(pgstac, tmp_path):
    # GIVEN a catalog whose item files have spaces and non-ASCII in their names, under a
    # directory whose name has '#' and '%41'
    write_catalog(tmp_path / "plain")  # pystac itself cannot write under such a name
    base = (tmp_path / "plain").rename(tmp_path / "run #3 %41")
    for old, new in [("alpha-0", "my item ü"), ("beta-1", "b€ta 1")]:
        holder = next(base.rglob(f"{old}.json"))
        holder.rename(holder.with_name(f"{new}.json"))
        for coll in base.rglob("collection.json"):
            coll.write_text(coll.read_text().replace(f"{old}.json", f"{new}.json"))
    # WHEN it is crawled from disk and over http
    local = invoke(str(base), "--dsn", pgstac.dsn, "--json")
    assert local.exit_code == 0, local.output
    assert summary(local)["items_loaded"] == 5
    with serving(base) as url:
        served = invoke(f"{url}/catalog.json", "--dsn", pgstac.dsn, "--json")
    # THEN both found every item (the second run read them all, and loaded none twice)
    assert served.exit_code == 0, served.output
    assert (summary(served)["failed"], summary(served)["documents"]) == (0, 7)


def test_the_default_checkpoint_follows_the_catalog_not_how_it_was_named(
    deployed, tmp_path, monkeypatch
):
    monkeypatch.setenv("STACTOOLS_INGEST_HOME", str(tmp_path / "home"))
    for name in ("one", "two"):
        write_catalog(tmp_path / name)
    # GIVEN one catalog crawled to the stack as ./catalog.json
    monkeypatch.chdir(tmp_path / "one")
    assert invoke("catalog.json", "--stack", STACK).exit_code == 0
    assert len(deployed.published("load")) == 7
    # WHEN another catalog, also ./catalog.json from its directory, is crawled
    monkeypatch.chdir(tmp_path / "two")
    other = invoke("catalog.json", "--stack", STACK)
    # THEN it is published, not taken for the first one
    assert other.exit_code == 0, other.output
    assert len(deployed.published("load")) == 7
    # AND the first one, named another way (from elsewhere, by its directory), is found finished
    monkeypatch.chdir(tmp_path)
    again = invoke("one", "--stack", STACK)
    assert again.exit_code == 0 and "already submitted in full" in again.stderr
    assert deployed.published("load") == []


def test_a_crawl_reads_each_document_once(deployed, tmp_path, monkeypatch):
    # GIVEN a served catalog, crawled to a stack (the root is checked before the stack is)
    monkeypatch.setenv("STACTOOLS_INGEST_HOME", str(tmp_path / "home"))
    write_catalog(tmp_path / "stac")
    hits: collections.Counter[str] = collections.Counter()
    with serving(tmp_path / "stac", hits) as url:
        result = invoke(f"{url}/catalog.json", "--stack", STACK)
    # THEN every document, the root included, was fetched exactly once
    assert result.exit_code == 0, result.output
    assert len(hits) == 9 and set(hits.values()) == {1}, hits  # 2 catalogs, 2 collections, 5 items


def test_dry_run_counts_and_fails_on_broken_links(tmp_path):
    root = write_catalog(tmp_path / "stac")
    (tmp_path / "stac/alpha/alpha-0/alpha-0.json").unlink()
    result = invoke(str(root), "--dry-run", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "catalogs": 2, "collections": 2, "items": 4, "problems": 1, "skipped": 0
    }  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = invoke(str(empty), "--dry-run")
    assert "a directory without a catalog.json or collection.json" in str(refused.exception)
