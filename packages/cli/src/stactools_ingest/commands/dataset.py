"""``dataset run|check|list``: backfill a dataset from its definition in ``datasets/``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from stactools_ingest.commands.backfill import (
    checkpoint_options,
    print_dry_run,
    run_here,
    target_options,
)
from stactools_ingest.datasets import (
    DATASETS_DIR,
    Dataset,
    DatasetError,
    definitions,
    find,
    load,
)
from stactools_ingest.inputs import InputProblem, check_files


def _open(name: str) -> tuple[Path, Dataset]:
    path = find(name)
    dataset = load(path)
    if not dataset.inventory.source.startswith("s3://"):
        check_files([dataset.inventory.source])
    return path, dataset


@click.group("dataset")
def dataset() -> None:
    """Datasets defined in datasets/NAME.yaml: package, collection, item options, inventory.

    Relative paths in a definition (the inventory's source, hrefs) are relative to the
    directory you run from, as for every other command.
    """


@dataset.command("list")
def list_datasets() -> None:
    """The datasets defined under ./datasets (and the project's top), checked."""
    paths = definitions()
    if not paths:
        click.echo(f"no dataset definitions in {DATASETS_DIR}/", err=True)
    for path in paths:
        try:
            definition = load(path)
        except DatasetError as e:
            click.echo(f"{path.stem}\tINVALID: {e}")
            continue
        click.echo(f"{path.stem}\t{definition.package}\t{definition.description or ''}".rstrip())


@dataset.command("run")
@click.argument("name")
@target_options
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="With --stack, SNS publish_batch calls in flight at once (8); without, ItemGen workers "
    "(run's default).",
)
@click.option("--dry-run", is_flag=True, help="Print the requests as NDJSON instead.")
@click.option(
    "--show", type=click.IntRange(min=0), help="With --dry-run: print only the first N requests."
)
@checkpoint_options("dataset definition")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def run_dataset(
    name: str,
    stack_name: str | None,
    dsn: str | None,
    workers: int | None,
    dry_run: bool,
    show: int | None,
    checkpoint_path: Path | None,
    no_checkpoint: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Create the dataset's collection, then one item per href of its inventory.

    Without --stack it runs here, through `run`'s pipeline and queue: the collection request is
    generated and loaded before any item, and a rerun submits nothing twice. With --stack the
    requests are published to the ItemGen topic, with a checkpoint that a rerun continues from.
    """
    path, definition = _open(name)
    label = path.stem
    if dry_run:
        print_dry_run(definition.records(label), show)
        return
    if not stack_name:
        run_here(
            definition.records(label),
            dsn,
            gen_workers=workers,
            checkpoint_path=checkpoint_path,
            no_checkpoint=no_checkpoint,
            as_json=as_json,
            quiet=quiet,
        )
    from stactools_ingest.aws_publish import sns_client
    from stactools_ingest.aws_stack import client, resolve_stack
    from stactools_ingest.checkpoint import Checkpoint, default_path
    from stactools_ingest.commands.submit import publish_documents, publish_resumably

    outputs = resolve_stack(stack_name, client("cloudformation"))
    total = definition.count()  # for the progress bar's ETA
    if no_checkpoint:
        publish_documents(
            definition.records(label),
            outputs,
            sns_client(),
            as_json=as_json,
            workers=workers or 8,
            total=total,
        )
        return
    # where the definition and a local inventory are, not how they were named from here
    fixed = definition.model_dump(mode="json")
    if not definition.inventory.source.startswith("s3://"):
        fixed["inventory"]["source"] = str(Path(definition.inventory.source).absolute())
    identity = {"dataset": str(path.absolute()), "definition": fixed}
    publish_resumably(
        lambda done: definition.rows(label, skip=done),
        Checkpoint(checkpoint_path or default_path("dataset", stack_name, identity), identity),
        outputs,
        sns_client(),
        as_json=as_json,
        workers=workers or 8,
        total=total,
    )


@dataset.command("check")
@click.argument("name")
@click.option("--href", help="The sample href (default: the inventory's first).")
@click.option("--json", "as_json", is_flag=True, help="Print the sample item as JSON.")
def check_dataset(name: str, href: str | None, as_json: bool) -> None:
    """Run create-collection and create-item on one sample, as a backfill would, and check that
    pgstac would take the results; nothing is loaded or published."""
    from ingest_common.collection_settings import PARTITION_TRUNC_KEY
    from item_gen.core import generate
    from item_gen.models import parse_request
    from item_gen.runner import run_once
    from item_gen.settings import GenSettings
    from item_load.errors import InvalidCollection, InvalidItem
    from item_load.validation import check_collection, check_item

    path, definition = _open(name)
    where = "--href"
    if href is None:
        first = next(iter(definition.inventory.hrefs()), None)
        if first is None:
            raise DatasetError(f"{path}: the inventory {definition.inventory.source} lists no href")
        where, href = first
    settings = GenSettings()
    say = lambda text: click.echo(text, err=True)  # noqa: E731
    collection_request = definition.collection_request()
    if collection_request is not None:
        say(f"create-collection ({definition.package}) …")
        collection = generate(parse_request(collection_request), settings, run_once)
        collection.pop(PARTITION_TRUNC_KEY, None)
        try:
            check_collection(collection)
        except InvalidCollection as e:
            raise DatasetError(
                f"{path}: create-collection wrote a collection pgstac refuses: {e}"
            ) from None
        say(f"collection {collection['id']}: ok")
    say(f"create-item {href} …")
    request = definition.item_request(where, href)
    if isinstance(request, InputProblem):
        raise DatasetError(f"{path}: {request.reason}")
    item = generate(parse_request(request.obj), settings, run_once)
    try:
        check_item(item)
    except InvalidItem as e:
        raise DatasetError(f"{path}: create-item wrote an item pgstac refuses: {e}") from None
    if collection_request is not None and item.get("collection") != collection["id"]:
        raise DatasetError(
            f"{path}: the item's collection {item.get('collection')!r} is not the collection's "
            f"id {collection['id']!r}; set collection.id in the definition"
        )
    if as_json:
        click.echo(json.dumps(item))
    else:
        assets = ", ".join(sorted(item.get("assets", {}))) or "none"
        click.echo(
            f"item {item['id']} of collection {item.get('collection')}: ok "
            f"(datetime {item['properties'].get('datetime')}, assets: {assets})",
            file=sys.stdout,
        )
