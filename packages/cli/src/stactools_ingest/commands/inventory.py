"""``inventory``: turn a list of hrefs into item requests and publish them (the shell loop)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click
from pydantic import ValidationError

from item_gen.models import ItemRequest
from stactools_ingest.aws_publish import sns_client
from stactools_ingest.aws_stack import STACK_HELP, client, resolve_stack
from stactools_ingest.commands.submit import publish_documents
from stactools_ingest.inputs import InputProblem, InputRecord, check_files


def _parse_options(values: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip("- "):
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--option")
        options[key.strip().lstrip("-")] = val
    return options


def _open(path: str) -> contextlib.AbstractContextManager[TextIO]:
    if path == "-":
        return contextlib.nullcontext(sys.stdin)  # never close stdin
    return open(path, encoding="utf-8")


def build_requests(
    path: str, template: dict[str, Any], arg_template: str
) -> Iterator[InputRecord | InputProblem]:
    """An item request (or why not) for each non-blank, non-``#`` line of the inventory."""
    name = "<stdin>" if path == "-" else path
    with _open(path) as stream:
        for lineno, line in enumerate(stream, 1):
            href = line.strip()
            if not href or href.startswith("#"):
                continue
            source = f"{name}:{lineno}"
            fields = {**template, "create_item_args": [arg_template.replace("{href}", href)]}
            try:
                request = ItemRequest.model_validate(fields)
            except ValidationError as e:
                yield InputProblem(source, f"invalid request: {e.errors()[0]['msg']}")
                continue
            doc = request.model_dump(exclude_none=True)
            if not doc["extra_packages"]:
                del doc["extra_packages"]
            yield InputRecord(source, doc)


@click.command("inventory")
@click.argument("inventory", metavar="URLS.txt")
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
@click.option("--stack", "stack_name", metavar="NAME", help=STACK_HELP)
@click.option("--dry-run", is_flag=True, help="Print the requests as NDJSON instead of publishing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def inventory(
    inventory: str,
    package_name: str,
    group_name: str,
    collection_id: str | None,
    options: tuple[str, ...],
    extra_packages: tuple[str, ...],
    arg_template: str,
    stack_name: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Publish one item request per href in URLS.txt (blank lines and # comments are skipped)."""
    if "{href}" not in arg_template:
        raise click.BadParameter("must contain {href}", param_hint="--arg-template")
    if not dry_run and not stack_name:
        raise click.UsageError("--stack NAME is required (or use --dry-run)")
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
    check_files([inventory])
    requests = build_requests(inventory, template, arg_template)
    if dry_run:
        for record in requests:
            if isinstance(record, InputProblem):
                click.echo(f"{record.source}: {record.reason}", err=True)
            else:
                click.echo(json.dumps(record.obj))
        return
    outputs = resolve_stack(stack_name, client("cloudformation"))
    publish_documents(requests, outputs, sns_client(), as_json=as_json)
