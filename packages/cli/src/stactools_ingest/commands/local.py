"""``stactools-ingest local``: the embedded PostgreSQL + PostGIS + pgstac server."""

from __future__ import annotations

import click

from stactools_ingest.target import embedded, start_embedded_server

NOT_RUNNING = 3  # what `local status` exits with when stopped, as `systemctl status` does


@click.group("local")
def local() -> None:
    """Run an embedded pgstac for this project.

    The project is the git checkout holding the current directory (else the directory itself);
    its data is in .stactools-ingest/ there. As root, when the server user ('postgres') cannot
    enter the project (a clone under /root), the data goes to
    /var/lib/stactools-ingest/<name>-<hash>, said once and found again by every command.
    Set STACTOOLS_INGEST_HOME to keep it anywhere else.
    """


@local.command("start")
def start() -> None:
    """Start (initialising and migrating it the first time) and print its DSN."""
    click.echo(start_embedded_server().dsn())


@local.command("stop")
def stop() -> None:
    """Stop the server; its data and port stay for the next start."""
    click.echo("stopped" if embedded().stop() else "not running")


@local.command("status")
@click.pass_context
def status(ctx: click.Context) -> None:
    """Whether the server runs and where its data is; exits 3 when it is stopped."""
    server = embedded()
    running = server.is_running()
    click.echo(f"{'running' if running else 'stopped'}  data: {server.home}")
    if not running:
        ctx.exit(NOT_RUNNING)
    password = server.password
    shown = server.dsn().replace(f":{password}@", ":***@") if password else server.dsn()
    click.echo(f"dsn: {shown}  (with the password: stactools-ingest local dsn)")


@local.command("dsn")
def dsn() -> None:
    """Print the connection string (password included), for psql, pypgstac or stac-fastapi."""
    server = embedded()
    if not server.is_running():
        raise click.ClickException(
            "the embedded pgstac is not running; run: stactools-ingest local start"
        )
    click.echo(server.dsn())
