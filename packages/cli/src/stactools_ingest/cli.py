"""The ``stactools-ingest`` command group; domain errors become one line and an exit code here."""

from __future__ import annotations

import sys

import click

from ingest_common.errors import IngestError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Turn item requests and STAC documents into a pgstac catalog, locally or on AWS."""


def _register() -> None:
    from stactools_ingest.commands import aws_status, dlq, inventory, local, run, search, submit

    for module in (local, run, dlq, search, submit, inventory, aws_status):
        for command in module.COMMANDS:
            cli.add_command(command)


def main() -> None:
    """Entry point: run the group, turning IngestError into ``error: …`` and its exit code."""
    _register()
    try:
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except IngestError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
