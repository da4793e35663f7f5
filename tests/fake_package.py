"""A tiny stactools plugin built as a wheel on the fly, for warm-runner tests that need a package
to misbehave on request (leak environment changes, leave processes behind, wait for a signal).

``stac fakegen create-item [ACTION…] DESTINATION`` records what it saw when it started
(``FAKEGEN_PROBE``, cwd, temp directory, umask) in the item's properties, then performs each
action: ``setenv:NAME=VALUE``, ``chdir:DIR``, ``tempdir:DIR``, ``umask:OCTAL``, ``stdout``
(replace ``sys.stdout``), ``ignore-sigchld``, ``spawn`` (a ``sleep`` holding stdout), ``daemon``
(a ``sleep`` in its own session), ``orphan`` (a ``sleep`` whose parent has exited), ``noise:MB``
(write MB megabytes to stderr, 1 MB at a time, waiting each time until stderr's file is under
1.5 MB again), ``waitfor:PATH`` (block until PATH exists), ``id:ID`` (the item's id, else
``fake-item``). The pids it started are in ``properties["spawned"]``, and appended to PATH as
they start after ``pidfile:PATH``. With ``FAKEGEN_LOG`` set, each item's id is appended to that
file once the item is written: how often each item was made.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

NAME = "stactools_fakegen"
GROUP = "fakegen"
COLLECTION = {
    "type": "Collection",
    "stac_version": "1.0.0",
    "id": "fake",
    "description": "what the fake package makes",
    "license": "other",
    "extent": {
        "spatial": {"bbox": [[-180, -90, 180, 90]]},
        "temporal": {"interval": [[None, None]]},
    },
    "links": [],
}
"""The collection of the items the fake package makes (their ``collection`` is ``fake``)."""

PLUGIN = r'''
import io, json, os, signal, subprocess, sys, tempfile, time

import click


def register_plugin(registry):
    registry.register_subcommand(create_command)


def create_command(cli):
    @cli.group("fakegen")
    def fakegen():
        """A fake package for stactools-ingest's tests."""

    @fakegen.command("create-item")
    @click.argument("actions", nargs=-1)
    @click.argument("destination")
    def create_item(actions, destination):
        umask = os.umask(0)
        os.umask(umask)
        seen = {
            "probe": os.environ.get("FAKEGEN_PROBE"),
            "cwd": os.getcwd(),
            "tempdir": tempfile.gettempdir(),
            "umask": umask,
            "stdout": type(sys.stdout).__name__,
            "sigchld": str(signal.getsignal(signal.SIGCHLD)),
        }
        spawned = []
        pidfile = None
        item_id = "fake-item"

        def started(pid):
            spawned.append(pid)
            if pidfile:
                with open(pidfile, "a") as f:
                    f.write(f"{pid}\n")

        for action in actions:
            verb, _, arg = action.partition(":")
            if verb == "setenv":
                name, _, value = arg.partition("=")
                os.environ[name] = value
            elif verb == "chdir":
                os.chdir(arg)
            elif verb == "tempdir":
                tempfile.tempdir = arg
            elif verb == "umask":
                os.umask(int(arg, 8))
            elif verb == "stdout":
                sys.stdout = io.StringIO()
            elif verb == "ignore-sigchld":
                signal.signal(signal.SIGCHLD, signal.SIG_IGN)
            elif verb == "spawn":
                started(subprocess.Popen(["sleep", "600"]).pid)
            elif verb == "daemon":
                started(subprocess.Popen(["sleep", "600"], start_new_session=True).pid)
            elif verb == "orphan":
                out = subprocess.run(
                    ["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
                    capture_output=True, text=True, check=True,
                )
                started(int(out.stdout))
            elif verb == "pidfile":
                pidfile = arg
            elif verb == "id":
                item_id = arg
            elif verb == "noise":  # MB to stderr, waiting each time for the file to be cut back
                for _ in range(int(arg)):
                    os.write(2, b"x" * 1_000_000)
                    waited = 0
                    while os.fstat(2).st_blocks * 512 > 1_500_000:  # held on disk, holes not
                        if waited > 30:
                            raise RuntimeError("stderr was never cut back")
                        time.sleep(0.05)
                        waited += 0.05
            elif verb == "waitfor":
                while not os.path.exists(arg):
                    time.sleep(0.02)
        item = {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": item_id,
            "collection": "fake",
            "geometry": {"type": "Point", "coordinates": [0, 0]},
            "bbox": [0, 0, 0, 0],
            "properties": {"datetime": "2020-01-01T00:00:00Z", "seen": seen, "spawned": spawned},
            "links": [],
            "assets": {},
        }
        with open(destination, "w") as f:
            json.dump(item, f)
        if os.environ.get("FAKEGEN_LOG"):  # one line per item made: how often each was made
            with open(os.environ["FAKEGEN_LOG"], "a") as f:
                f.write(item_id + "\n")

    return fakegen
'''


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(directory: Path) -> Path:
    """Write ``stactools_fakegen-0.1.0-py3-none-any.whl`` into ``directory`` and return its path."""
    dist_info = f"{NAME}-0.1.0.dist-info"
    files = {
        "stactools/fakegen/__init__.py": PLUGIN.encode(),
        f"{dist_info}/METADATA": (
            b"Metadata-Version: 2.1\nName: stactools-fakegen\nVersion: 0.1.0\n"
        ),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: stactools-ingest-tests\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [_record_line(name, data) for name, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    wheel = directory / f"{NAME}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel
