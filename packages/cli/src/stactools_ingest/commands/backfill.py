"""What ``inventory``, ``crawl`` and ``dataset run`` share: the dry run, and running here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from stactools_ingest.aws_stack import STACK_HELP
from stactools_ingest.inputs import InputProblem, InputRecord

F = TypeVar("F", bound=Callable[..., Any])


def target_options(fn: F) -> F:
    """``--stack`` and ``--dsn``, worded alike everywhere: where a backfill goes."""
    fn = click.option(
        "--dsn",
        help="Without --stack: the target pgstac (default: PGSTAC_DSN, PG* variables, else "
        "embedded).",
    )(fn)
    return click.option("--stack", "stack_name", metavar="NAME", help=STACK_HELP)(fn)


def checkpoint_options(what: str) -> Callable[[F], F]:
    """``--checkpoint FILE`` and ``--no-checkpoint``; ``what`` says how the default is keyed."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--no-checkpoint",
            is_flag=True,
            help="With --stack: keep no checkpoint; submit everything.",
        )(fn)
        return click.option(
            "--checkpoint",
            "checkpoint_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="With --stack: the file recording how far it got, so a rerun continues there "
            f"(default: one per {what} and stack under the project's home).",
        )(fn)

    return decorate


def print_dry_run(records: Iterable[InputRecord | InputProblem], show: int | None) -> None:
    """Print the requests as NDJSON (the first ``show``), unusable ones on stderr, and a count."""
    count = 0
    for record in records:
        if isinstance(record, InputProblem):
            click.echo(f"{record.source}: {record.reason}", err=True)
            continue
        if show is None or count < show:
            click.echo(json.dumps(record.obj))
        count += 1
    shown = count if show is None else min(show, count)
    click.echo(f"{count} requests ({shown} shown); nothing was submitted", err=True)


def run_here(
    records: Iterable[InputRecord | InputProblem],
    dsn: str | None,
    *,
    gen_workers: int | None,
    checkpoint_path: Path | None,
    no_checkpoint: bool,
    as_json: bool,
    quiet: bool = False,
) -> NoReturn:
    """Run ``records`` through ``run``'s local pipeline and exit as ``run`` does."""
    if checkpoint_path is not None or no_checkpoint:
        raise click.UsageError("--checkpoint is for --stack; the local queue resumes by itself")
    # Imported here: publishing to a stack needs none of the local pipeline's packages.
    from stactools_ingest.commands.run import RUN_WORKERS, run_locally
    from stactools_ingest.pipeline import LocalPipeline
    from stactools_ingest.target import resolve_dsn

    workers = RUN_WORKERS if gen_workers is None else gen_workers
    pipeline = LocalPipeline(resolve_dsn(dsn), gen_workers=workers)
    run_locally(pipeline, records, as_json=as_json, quiet=quiet)
