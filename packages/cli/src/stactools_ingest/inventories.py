"""The hrefs of a backfill: a plain list, or an S3 Inventory report, filtered.

An S3 Inventory report is a ``manifest.json`` naming data files in CSV.gz, Parquet or ORC, all
read with pyarrow's readers (CSV with the standard library: its keys are URL-encoded and it has
no header, the columns are the manifest's ``fileSchema``). Only current objects count: rows of
noncurrent versions and delete markers are skipped. A manifest is read from ``s3://`` (its data
files from the destination bucket it names) or from a local copy of the destination bucket
(``aws s3 sync``), where each data file is looked for under the manifest's parent directories.

Rows come out in a fixed order (the manifest's files, then their rows), each with where it came
from (``file:line``, or ``data file#row``), so a reader can report and resume by position.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_plus, urlparse

from pydantic import ValidationError

from ingest_common.errors import IngestError
from item_gen.models import ItemRequest
from stactools_ingest.inputs import InputProblem, InputRecord, check_files

FORMATS = ("CSV", "Parquet", "ORC")


class InventoryError(IngestError):
    """An inventory that cannot be read as what it claims to be; nothing was submitted."""

    exit_code = 2


@dataclass(frozen=True)
class HrefFilter:
    """Which hrefs a backfill takes: all of ``prefix``, ``suffix`` and ``pattern`` that are
    set must match the whole href (``s3://bucket/key`` for an S3 Inventory row)."""

    prefix: str | None = None
    suffix: str | None = None
    pattern: re.Pattern[str] | None = None

    def __call__(self, href: str) -> bool:
        return (
            (self.prefix is None or href.startswith(self.prefix))
            and (self.suffix is None or href.endswith(self.suffix))
            and (self.pattern is None or self.pattern.search(href) is not None)
        )


def read_hrefs(source: str, keep: HrefFilter | None = None) -> Iterator[tuple[str, str]]:
    """``(where, href)`` for each href of ``source`` that ``keep`` takes, in a fixed order.

    ``source`` is a manifest.json (local or ``s3://``), or a plain list: one href per line,
    blank lines and ``#`` comments skipped.
    """
    keep = keep or HrefFilter()
    if source.startswith("s3://") or source.endswith("manifest.json"):
        rows = _report_rows(source)
    else:
        rows = _list_rows(source)
    return ((where, href) for where, href in rows if keep(href))


def count_hrefs(source: str, keep: HrefFilter | None = None) -> int | None:
    """How many hrefs ``read_hrefs`` yields, for a progress bar's ETA: a quick pass over a local
    inventory; None for one in S3, which is not read twice for a progress bar."""
    if source.startswith("s3://"):
        return None
    return sum(1 for _ in read_hrefs(source, keep))


def _list_rows(path: str) -> Iterator[tuple[str, str]]:
    check_files([path])
    with open(path, encoding="utf-8") as stream:
        for lineno, line in enumerate(stream, 1):
            href = line.strip()
            if href and not href.startswith("#"):
                yield f"{path}:{lineno}", href


# -- S3 Inventory ------------------------------------------------------------------------------


def _report_rows(manifest_ref: str) -> Iterator[tuple[str, str]]:
    store: _LocalStore | _S3Store = (
        _S3Store(manifest_ref) if manifest_ref.startswith("s3://") else _LocalStore(manifest_ref)
    )
    manifest = _manifest(manifest_ref, store.manifest())
    fmt = manifest["fileFormat"]
    for entry in manifest["files"]:
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key, str):
            raise InventoryError(f"{manifest_ref}: a 'files' entry has no 'key'")
        with store.open(manifest["destinationBucket"], key) as data:
            rows = (
                _csv_rows(data, manifest["fileSchema"]) if fmt == "CSV" else _arrow_rows(data, fmt)
            )
            for n, (bucket, object_key) in enumerate(rows, 1):
                yield f"{key}#{n}", f"s3://{bucket}/{object_key}"


def _manifest(ref: str, raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise InventoryError(f"{ref} is not JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise InventoryError(f"{ref} is not an S3 Inventory manifest (a JSON object)")
    fmt = manifest.get("fileFormat")
    if fmt not in FORMATS:
        raise InventoryError(
            f"{ref}: fileFormat {fmt!r} is not one of {', '.join(FORMATS)} (S3 Inventory's)"
        )
    if not isinstance(manifest.get("files"), list):
        raise InventoryError(f"{ref} has no 'files' list; is it an S3 Inventory manifest.json?")
    dest = manifest.get("destinationBucket")
    if not isinstance(dest, str) or not dest:
        raise InventoryError(f"{ref} has no 'destinationBucket'")
    manifest["destinationBucket"] = dest.removeprefix("arn:aws:s3:::")
    if fmt == "CSV":
        manifest["fileSchema"] = _csv_columns(ref, manifest.get("fileSchema"))
    return manifest


def _csv_columns(ref: str, schema: Any) -> dict[str, int]:
    if not isinstance(schema, str):
        raise InventoryError(f"{ref}: a CSV report needs its 'fileSchema' (the column names)")
    columns = {name.strip(): n for n, name in enumerate(schema.split(","))}
    for needed in ("Bucket", "Key"):
        if needed not in columns:
            raise InventoryError(f"{ref}: fileSchema has no {needed} column")
    return columns


def _csv_rows(data: IO[bytes], columns: dict[str, int]) -> Iterator[tuple[str, str]]:
    bucket, key = columns["Bucket"], columns["Key"]
    latest, marker = columns.get("IsLatest"), columns.get("IsDeleteMarker")
    text = io.TextIOWrapper(gzip.GzipFile(fileobj=data), encoding="utf-8", newline="")
    for row in csv.reader(text):
        if latest is not None and row[latest].lower() == "false":
            continue
        if marker is not None and row[marker].lower() == "true":
            continue
        yield row[bucket], unquote_plus(row[key])  # CSV reports URL-encode keys


def _arrow_rows(data: IO[bytes], fmt: str) -> Iterator[tuple[str, str]]:
    if fmt == "Parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(data)
        names = parquet.schema_arrow.names
        batches = parquet.iter_batches(batch_size=65_536, columns=_arrow_columns(names))
    else:
        import pyarrow.orc as orc

        reader = orc.ORCFile(data)
        names = reader.schema.names
        columns = _arrow_columns(names)
        batches = (reader.read_stripe(n, columns=columns) for n in range(reader.nstripes))
    for batch in batches:
        table = batch.to_pydict()
        latest = table.get("is_latest") or [True] * batch.num_rows
        marker = table.get("is_delete_marker") or [False] * batch.num_rows
        for bucket, key, is_latest, is_marker in zip(
            table["bucket"], table["key"], latest, marker, strict=True
        ):
            if is_latest is not False and not is_marker:
                yield bucket, key


def _arrow_columns(names: list[str]) -> list[str]:
    if "bucket" not in names or "key" not in names:
        raise InventoryError(f"a data file without bucket and key columns (it has {names})")
    return [n for n in ("bucket", "key", "is_latest", "is_delete_marker") if n in names]


class _LocalStore:
    """A manifest on disk, in a copy of the destination bucket: data files are found by key
    under the manifest's parent directories."""

    def __init__(self, manifest: str) -> None:
        check_files([manifest])
        self.path = Path(manifest)

    def manifest(self) -> bytes:
        return self.path.read_bytes()

    def open(self, bucket: str, key: str) -> IO[bytes]:
        for root in self.path.parents:
            candidate = root / key
            if candidate.is_file():
                return candidate.open("rb")
        raise InventoryError(
            f"data file {key} not found under any parent directory of {self.path}; sync the "
            f"whole destination bucket (aws s3 sync s3://{bucket} DIR) or read the manifest "
            "from S3"
        )


class _S3Store:
    """A manifest in S3: data files are read from the destination bucket it names, each through
    a temporary file (the Parquet and ORC readers seek)."""

    def __init__(self, manifest: str) -> None:
        from stactools_ingest.aws_stack import client

        self.s3 = client("s3")
        self.ref = urlparse(manifest)

    def manifest(self) -> bytes:
        return self.get(self.ref.netloc, self.ref.path.lstrip("/")).read()

    def get(self, bucket: str, key: str) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            raise InventoryError(f"s3://{bucket}/{key}: cannot read it ({code or e})") from None
        except BotoCoreError as e:  # no credentials, no endpoint, a timeout: one line, not a trace
            raise InventoryError(f"s3://{bucket}/{key}: cannot read it ({e})") from None

    def open(self, bucket: str, key: str) -> IO[bytes]:
        body = self.get(bucket, key)
        # Returned open: the caller's ``with`` closes (and so removes) it.
        spool = tempfile.TemporaryFile()  # noqa: SIM115
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            spool.write(chunk)
        spool.seek(0)
        return spool


# -- hrefs to item requests ---------------------------------------------------------------------


def request_for(
    source: str, href: str, template: dict[str, Any], arg_template: str
) -> InputRecord | InputProblem:
    """The item request for one href of the inventory, or why there is none."""
    fields = {**template, "create_item_args": [arg_template.replace("{href}", href)]}
    try:
        request = ItemRequest.model_validate(fields)
    except ValidationError as e:
        return InputProblem(source, f"invalid request: {e.errors()[0]['msg']}")
    doc = request.model_dump(exclude_none=True)
    if not doc["extra_packages"]:
        del doc["extra_packages"]
    return InputRecord(source, doc)


def build_requests(
    hrefs: Iterable[tuple[str, str]], template: dict[str, Any], arg_template: str
) -> Iterator[InputRecord | InputProblem]:
    """An item request (or why not) for each ``(where, href)`` of the inventory."""
    for source, href in hrefs:
        yield request_for(source, href, template, arg_template)
