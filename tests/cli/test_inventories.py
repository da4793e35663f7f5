"""Reading S3 Inventory reports (manifest.json and its CSV.gz, Parquet or ORC files) and plain
href lists, filtered by prefix, suffix or regex, as ``stactools-ingest inventory`` does.

The reports are written here the way S3 writes them (the destination bucket's layout, the
manifest's fields, URL-encoded keys in CSV only), with pyarrow, the library that reads them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
from moto import mock_aws
from test_run import cli

from stactools_ingest.inventories import HrefFilter, InventoryError, read_hrefs

# bucket, key, is_latest, is_delete_marker
ROWS = [
    ("src", "tiles/2020/a b+c.tif", True, False),  # a space and a plus: URL-encoded in CSV
    ("src", "tiles/2020/a b+c.tif.aux.xml", True, False),
    ("src", "tiles/2021/d.tif", True, False),
    ("src", "tiles/2021/old.tif", False, False),  # a noncurrent version
    ("src", "tiles/2021/gone.tif", True, True),  # a delete marker
    ("src", "other/e.tif", True, False),
]
CURRENT = ["s3://src/tiles/2020/a b+c.tif", "s3://src/tiles/2020/a b+c.tif.aux.xml",
           "s3://src/tiles/2021/d.tif", "s3://src/other/e.tif"]  # fmt: skip
CSV_SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size"


def _table(rows: list[tuple]) -> pa.Table:
    return pa.table(
        {
            "bucket": [r[0] for r in rows],
            "key": [r[1] for r in rows],
            "version_id": ["v1"] * len(rows),
            "is_latest": [r[2] for r in rows],
            "is_delete_marker": [r[3] for r in rows],
            "size": [100] * len(rows),
        }
    )


def _csv_gz(rows: list[tuple]) -> bytes:
    from urllib.parse import quote_plus

    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL)
    for bucket, key, latest, marker in rows:
        writer.writerow([bucket, quote_plus(key, safe="/"), "v1", str(latest).lower(),
                         str(marker).lower(), "100"])  # fmt: skip
    return gzip.compress(text.getvalue().encode())


def _data(fmt: str, rows: list[tuple]) -> bytes:
    if fmt == "CSV":
        return _csv_gz(rows)
    sink = io.BytesIO()
    if fmt == "Parquet":
        pq.write_table(_table(rows), sink)
    else:
        orc.write_table(_table(rows), sink)
    return sink.getvalue()


def write_report(fmt: str, rows: list[tuple] = ROWS, parts: int = 2) -> dict[str, bytes]:
    """The destination bucket's objects of one report: data files and the manifest, by key."""
    ext = {"CSV": "csv.gz", "Parquet": "parquet", "ORC": "orc"}[fmt]
    objects, files = {}, []
    for n in range(parts):
        key = f"inv/src/daily/data/part-{n}.{ext}"
        objects[key] = _data(fmt, rows[n::parts])
        files.append({"key": key, "size": len(objects[key]), "MD5checksum": "x"})
    schema = {
        "CSV": CSV_SCHEMA,
        "Parquet": "message s3.inventory { required binary bucket (STRING); ... }",
        "ORC": "struct<bucket:string,key:string,version_id:string,is_latest:boolean>",
    }[fmt]
    manifest = {
        "sourceBucket": "src",
        "destinationBucket": "arn:aws:s3:::dest",
        "version": "2016-11-30",
        "creationTimestamp": "1764979200000",
        "fileFormat": fmt,
        "fileSchema": schema,
        "files": files,
    }
    objects["inv/src/daily/2026-12-06T00-00Z/manifest.json"] = json.dumps(manifest).encode()
    return objects


def on_disk(root: Path, objects: dict[str, bytes]) -> Path:
    """The report as `aws s3 sync s3://dest ROOT` leaves it; the manifest's path."""
    for key, data in objects.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root / "inv/src/daily/2026-12-06T00-00Z/manifest.json"


@pytest.mark.parametrize("fmt", ["CSV", "Parquet", "ORC"])
def test_a_synced_report_yields_the_current_objects(tmp_path, fmt):
    manifest = on_disk(tmp_path, write_report(fmt))
    got = [href for _, href in read_hrefs(str(manifest))]
    assert sorted(got) == sorted(CURRENT)


@pytest.mark.parametrize("fmt", ["CSV", "Parquet", "ORC"])
def test_a_report_in_s3_is_read_from_the_destination_bucket(tmp_path, fmt, aws_env):
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="dest")
        for key, data in write_report(fmt).items():
            s3.put_object(Bucket="dest", Key=key, Body=data)
        manifest = "s3://dest/inv/src/daily/2026-12-06T00-00Z/manifest.json"
        got = [href for _, href in read_hrefs(manifest, HrefFilter(suffix=".tif"))]
    assert sorted(got) == sorted(h for h in CURRENT if h.endswith(".tif"))


def test_filters_by_prefix_suffix_and_regex(tmp_path):
    manifest = on_disk(tmp_path, write_report("Parquet"))

    def hrefs(keep: HrefFilter) -> list[str]:
        return sorted(href for _, href in read_hrefs(str(manifest), keep))

    assert hrefs(HrefFilter(prefix="s3://src/tiles/")) == sorted(CURRENT[:3])
    assert hrefs(HrefFilter(suffix=".tif")) == sorted([CURRENT[0], CURRENT[2], CURRENT[3]])
    assert hrefs(HrefFilter(pattern=re.compile(r"/20\d\d/[a-z]\.tif$"))) == [CURRENT[2]]


def test_a_plain_list_is_read_line_by_line(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text("# today\n\ns3://b/one.tif\n  https://h/two.tif  \ns3://b/three.xml\n")
    got = list(read_hrefs(str(path), HrefFilter(suffix=".tif")))
    assert got == [(f"{path}:3", "s3://b/one.tif"), (f"{path}:4", "https://h/two.tif")]


def test_each_row_says_where_it_came_from(tmp_path):
    manifest = on_disk(tmp_path, write_report("CSV", parts=1))
    where = [w for w, _ in read_hrefs(str(manifest))]
    assert where[0].endswith("inv/src/daily/data/part-0.csv.gz#1")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"fileFormat": "Avro"}, "fileFormat 'Avro'"),
        ({"files": None}, "no 'files' list"),
        ({"fileSchema": "Key, Size"}, "no Bucket column"),
    ],
)
def test_a_manifest_it_cannot_read_is_one_clear_error(tmp_path, change, says):
    objects = write_report("CSV")
    key = "inv/src/daily/2026-12-06T00-00Z/manifest.json"
    objects[key] = json.dumps({**json.loads(objects[key]), **change}).encode()
    manifest = on_disk(tmp_path, objects)
    with pytest.raises(InventoryError, match=re.escape(says)):
        list(read_hrefs(str(manifest)))


def test_a_data_file_missing_beside_a_local_manifest_is_named(tmp_path):
    objects = write_report("ORC")
    del objects["inv/src/daily/data/part-1.orc"]
    manifest = on_disk(tmp_path, objects)
    with pytest.raises(InventoryError, match=r"part-1\.orc.*not found"):
        list(read_hrefs(str(manifest)))


def test_the_command_dry_run_counts_and_shows_the_first_requests(tmp_path):
    manifest = on_disk(tmp_path, write_report("Parquet"))
    result = cli(
        "inventory", str(manifest), "--package", "stactools-glad-glclu2020==0.1.1",
        "--group", "gladglclu2020", "--suffix", ".tif", "--dry-run", "--show", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(shown) == 2
    assert all(r["package_name"] == "stactools-glad-glclu2020==0.1.1" for r in shown)
    assert all(r["create_item_args"][0].endswith(".tif") for r in shown)
    assert "3 requests" in result.stderr
