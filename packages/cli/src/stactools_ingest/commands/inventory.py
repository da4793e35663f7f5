"""``inventory``: turn a list of hrefs or an S3 Inventory report into item requests and publish
them (the seed's shell loop of ``aws sns publish``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from item_gen.models import ItemRequest
from stactools_ingest.aws_publish import sns_client
from stactools_ingest.aws_stack import client, resolve_stack
from stactools_ingest.checkpoint import Checkpoint, Row
from stactools_ingest.checkpoint import default_path as default_checkpoint
from stactools_ingest.commands.backfill import (
    checkpoint_options,
    print_dry_run,
    run_here,
    target_options,
)
from stactools_ingest.commands.submit import publish_documents, publish_resumably
from stactools_ingest.inputs import check_files
from stactools_ingest.inventories import (
    HrefFilter,
    build_requests,
    count_hrefs,
    read_hrefs,
    request_for,
)


def _parse_options(values: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip("- "):
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--option")
        options[key.strip().lstrip("-")] = val
    return options


@click.command("inventory")
@click.argument("inventory", metavar="SOURCE")
@click.option(
    "--package",
    "package_name",
    required=True,
    help="stactools package, e.g. stactools-glad-glclu2020",
)
@click.option(
    "--group", "group_name", required=True, help="its `stac` sub-command, e.g. gladglclu2020"
)
@click.option("--collection", "collection_id", help="collection id for the produced items")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="create-item option, repeatable: --option href-format=s3://b/{loc}.tif",
)
@click.option(
    "--extra-package",
    "extra_packages",
    multiple=True,
    help="extra pin the package needs, repeatable",
)
@click.option(
    "--arg-template",
    default="{href}",
    show_default=True,
    help="the create-item argument built from each href",
)
@click.option("--prefix", help="Only hrefs starting with this (s3://bucket/key for S3 Inventory).")
@click.option("--suffix", help="Only hrefs ending with this, e.g. .tif")
@click.option("--match", "pattern", help="Only hrefs a Python regular expression finds a match in.")
@target_options
@click.option("--dry-run", is_flag=True, help="Print the requests as NDJSON instead of publishing.")
@click.option(
    "--show", type=click.IntRange(min=0), help="With --dry-run: print only the first N requests."
)
@checkpoint_options("inventory, filters and request template")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="With --stack, SNS publish_batch calls in flight at once (8); without, ItemGen workers "
    "(run's default).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def inventory(
    inventory: str,
    package_name: str,
    group_name: str,
    collection_id: str | None,
    options: tuple[str, ...],
    extra_packages: tuple[str, ...],
    arg_template: str,
    prefix: str | None,
    suffix: str | None,
    pattern: str | None,
    stack_name: str | None,
    dry_run: bool,
    show: int | None,
    checkpoint_path: Path | None,
    no_checkpoint: bool,
    workers: int | None,
    dsn: str | None,
    as_json: bool,
) -> None:
    """Publish one item request per href of SOURCE.

    SOURCE is a list of hrefs (one per line; blank lines and # comments are skipped) or an S3
    Inventory manifest.json (local, in a copy of the destination bucket, or s3://), whose CSV,
    Parquet or ORC files list the objects; only current objects are taken. Without --stack the
    requests run here, through `run`'s local pipeline and queue (a rerun submits nothing twice).
    """
    if "{href}" not in arg_template:
        raise click.BadParameter("must contain {href}", param_hint="--arg-template")
    template: dict[str, Any] = {
        "package_name": package_name,
        "group_name": group_name,
        "create_item_options": _parse_options(options),
        "collection_id": collection_id,
        "extra_packages": list(extra_packages),
    }
    try:  # fail once, before reading the inventory, when the shared fields are wrong
        ItemRequest.model_validate({**template, "create_item_args": ["x"]})
    except ValidationError as e:
        raise click.BadParameter(e.errors()[0]["msg"], param_hint="--package/--group") from None
    try:
        regex = re.compile(pattern) if pattern is not None else None
    except re.error as e:
        raise click.BadParameter(f"not a regular expression: {e}", param_hint="--match") from None
    keep = HrefFilter(prefix=prefix, suffix=suffix, pattern=regex)
    if not inventory.startswith("s3://"):
        check_files([inventory])
    hrefs = read_hrefs(inventory, keep)
    if dry_run:
        print_dry_run(build_requests(hrefs, template, arg_template), show)
        return
    if not stack_name:
        run_here(
            build_requests(hrefs, template, arg_template),
            dsn,
            gen_workers=workers,
            checkpoint_path=checkpoint_path,
            no_checkpoint=no_checkpoint,
            as_json=as_json,
        )
    workers = workers or 8
    outputs = resolve_stack(stack_name, client("cloudformation"))
    total = count_hrefs(inventory, keep)
    if no_checkpoint:
        requests = build_requests(hrefs, template, arg_template)
        publish_documents(
            requests, outputs, sns_client(), as_json=as_json, workers=workers, total=total
        )
        return
    identity = {
        "source": inventory if inventory.startswith("s3://") else str(Path(inventory).absolute()),
        "filters": [prefix, suffix, pattern],
        "template": template,
        "arg_template": arg_template,
    }

    def rows(skip: int) -> Iterator[Row]:
        for n, (where, href) in enumerate(read_hrefs(inventory, keep)):
            yield Row(href, None if n < skip else request_for(where, href, template, arg_template))

    publish_resumably(
        rows,
        Checkpoint(
            checkpoint_path or default_checkpoint("inventory", stack_name, identity), identity
        ),
        outputs,
        sns_client(),
        as_json=as_json,
        workers=workers,
        total=total,
    )
