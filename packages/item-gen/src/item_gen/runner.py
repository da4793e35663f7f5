"""Run a stactools package's ``create-item`` / ``create-collection`` in its own uv environment."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from item_gen.errors import PackageFailed, RequestTimedOut
from item_gen.models import Request
from item_gen.settings import GenSettings

STDERR_TAIL = 2000


def uvx_prefix(packages: list[str], settings: GenSettings) -> list[str]:
    """``uvx --with … --from stactools``: the environment a request's package runs in.

    stactools' CLI imports ``requests`` without depending on it, so it always comes along.
    """
    cmd = [settings.uvx]
    for package in [*packages, "requests"]:
        cmd += ["--with", package]
    return [*cmd, "--from", settings.stactools_spec]


def command_for(request: Request, destination: Path, settings: GenSettings) -> list[str]:
    """The full one-shot command line for a request, writing its JSON to ``destination``."""
    return [
        *uvx_prefix(request.packages, settings),
        "stac",
        request.group_name,
        request.command,
        *request.cli_args,
        str(destination),
    ]


def stderr_tail(text: str) -> str:
    """The end of a command's stderr, short enough for a log line and an error message."""
    text = text.strip()
    return text if len(text) <= STDERR_TAIL else "…" + text[-STDERR_TAIL:]


def destination_in(workdir: Path, request: Request) -> Path:
    """Where a request's command is told to write its JSON inside its working directory."""
    return workdir / ("collection.json" if request.command == "create-collection" else "item.json")


def read_output(workdir: Path, destination: Path, request: Request, cmd: list[str]) -> dict:
    """The JSON the command wrote: at ``destination``, or the one JSON file in ``workdir``.

    Some packages treat the destination as a directory and name the file themselves.
    """
    if destination.is_file():
        candidates = [destination]
    else:
        candidates = sorted(p for p in workdir.rglob("*.json") if p.is_file())
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "nothing"
        raise PackageFailed(
            f"request {request.label}: `{shlex.join(cmd)}` exited 0 but wrote {found}; "
            "expected exactly one STAC JSON file"
        )
    try:
        doc: Any = json.loads(candidates[0].read_text())
    except json.JSONDecodeError as e:
        raise PackageFailed(f"request {request.label}: output is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise PackageFailed(f"request {request.label}: output is not a JSON object")
    return doc


def run_once(request: Request, settings: GenSettings) -> dict:
    """Run the request's command in a fresh process and return the STAC document it wrote."""
    with tempfile.TemporaryDirectory(prefix="stactools-ingest-") as tmp:
        workdir = Path(tmp)
        destination = destination_in(workdir, request)
        cmd = command_for(request, destination, settings)
        # Runs in the caller's directory so relative paths in requests mean what the user meant.
        # A new session lets us kill uvx and the Python it starts together on timeout.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=settings.request_timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RequestTimedOut(
                f"request {request.label}: `{shlex.join(cmd)}` ran longer than "
                f"{settings.request_timeout_seconds:g} s and was killed; raise "
                "REQUEST_TIMEOUT_SECONDS if the package is just slow"
            ) from None
        if proc.returncode != 0:
            raise PackageFailed(
                f"request {request.label}: `{shlex.join(cmd)}` exited {proc.returncode}: "
                f"{stderr_tail(stderr)}"
            )
        return read_output(workdir, destination, request, cmd)
