"""``stactools-ingest local``: the embedded PostgreSQL + PostGIS + pgstac server."""

from __future__ import annotations

import click

from stactools_ingest.target import embedded


@click.group("local")
def local() -> None:
    """Run an embedded pgstac for this directory (data in .stactools-ingest/)."""


@local.command("start")
def start() -> None:
    """Start (initialising and migrating it the first time) and print its DSN."""
    server = embedded()
    server.start()
    click.echo(server.dsn())


@local.command("stop")
def stop() -> None:
    """Stop the server; its data stays for the next start."""
    click.echo("stopped" if embedded().stop() else "not running")


@local.command("status")
def status() -> None:
    """Whether the server runs, where its data is, and its DSN."""
    server = embedded()
    running = server.is_running()
    click.echo(f"{'running' if running else 'stopped'}  data: {server.home}")
    if running:
        click.echo(f"dsn: {server.dsn()}")


@local.command("dsn")
def dsn() -> None:
    """Print the connection string, for psql, pypgstac or stac-fastapi."""
    server = embedded()
    if not server.is_running():
        raise click.ClickException(
            "the embedded pgstac is not running; run: stactools-ingest local start"
        )
    click.echo(server.dsn())
