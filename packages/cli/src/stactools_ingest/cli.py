"""The ``stactools-ingest`` command group; domain errors become one line and an exit code here."""

from __future__ import annotations

import importlib
import sys

import click

from ingest_common.errors import IngestError

# Subcommands are imported only when used: `stactools-ingest local dsn` should not pay for
# boto3, pypgstac and the stage packages.
COMMANDS = {
    "local": "stactools_ingest.commands.local:local",
    "run": "stactools_ingest.commands.run:run",
    "dlq": "stactools_ingest.commands.dlq:dlq",
    "search": "stactools_ingest.commands.search:search",
    "submit": "stactools_ingest.commands.submit:submit",
    "inventory": "stactools_ingest.commands.inventory:inventory",
    "status": "stactools_ingest.commands.status:status",
    "prune": "stactools_ingest.commands.prune:prune",
    "crawl": "stactools_ingest.commands.crawl:crawl",
    "dataset": "stactools_ingest.commands.dataset:dataset",
    "serve": "stactools_ingest.commands.serve:serve",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module when that subcommand is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS and name not in self.commands:
            module, attr = COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stactools-ingest", prog_name="stactools-ingest")
def cli() -> None:
    """Turn item requests and STAC documents into a pgstac catalog, locally or on AWS."""


def _register() -> None:
    """Load every subcommand now (tests that invoke ``cli`` directly may call this)."""
    for name in COMMANDS:
        cli.get_command(click.Context(cli), name)


def main() -> None:
    """Entry point: run the group, turning IngestError into ``error: …`` and its exit code."""
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
