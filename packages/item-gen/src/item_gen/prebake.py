"""Package environments baked into the ItemGen image, and how a request finds out it has one.

The image build and the runtime must ask uv for the very same requirement set, or the prebaked
environment is never the one a request uses and every cold start downloads again. So the build
runs this module (``python -m item_gen.prebake DEST``), which builds each environment with
``uvx_prefix``, the function the runtime uses, and writes a manifest of what it built. At run
time a request whose environment is in the manifest runs with ``UV_OFFLINE=1``: uv then neither
needs PyPI (a deployment without NAT, a PyPI outage) nor pays a resolution round trip.

The cache is built at its run-time path (``UV_CACHE_DIR``, /tmp/uv-cache in the image) and moved
to ``DEST/uv-cache``; ``infrastructure/item_gen_entrypoint.sh`` restores it into /tmp when a
container starts: a copy of the small index and lock files, and symbolic links to the
environments themselves, which stay read-only in the image.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, TypeAdapter, model_validator

from item_gen.environments import environment_key, uvx_prefix
from item_gen.settings import GenSettings

MANIFEST_NAME = "manifest.json"
"""The manifest's file name inside the prebaked directory."""


def _requirement(value: str) -> str:
    # A requirement specifier, never shell syntax: the list arrives as a Docker build argument.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~]*", value):
        raise ValueError(f"prebaked package {value!r} is not a package requirement")
    return value


Requirement = Annotated[str, AfterValidator(_requirement)]


class PrebakedPackage(BaseModel):
    """One environment to bake: a request's ``package_name`` and its ``extra_packages``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    package: Requirement
    extra_packages: tuple[Requirement, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        # A bare name is the common case: an environment of that package alone.
        return {"package": value} if isinstance(value, str) else value

    @property
    def packages(self) -> list[str]:
        return [self.package, *self.extra_packages]


PACKAGE_LIST = TypeAdapter(list[PrebakedPackage])


def parse_packages(text: str) -> list[PrebakedPackage]:
    """``PREBAKED_PACKAGES``: a JSON list of names or ``{package, extra_packages}`` objects."""
    text = text.strip()
    if not text:
        return []
    return PACKAGE_LIST.validate_json(text)


def prebake_command(entry: PrebakedPackage, settings: GenSettings) -> list[str]:
    """The command that builds an entry's environment: the runtime's prefix, then ``stac``."""
    return [*uvx_prefix(entry.packages, settings), "stac", "--help"]


def prebake(entries: list[PrebakedPackage], dest: Path, settings: GenSettings) -> dict:
    """Build every entry's environment into ``UV_CACHE_DIR``, move it to ``dest``, write the
    manifest; returns the manifest."""
    cache = Path(os.environ.get("UV_CACHE_DIR") or "/tmp/uv-cache")
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_LINK_MODE": "copy"}
    environments = []
    for entry in entries:
        cmd = prebake_command(entry, settings)
        started = time.monotonic()
        print(f"prebaking {shlex.join(entry.packages)}: {shlex.join(cmd)}", file=sys.stderr)
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise SystemExit(
                f"prebake: `{shlex.join(cmd)}` exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip()[-2000:]}"
            )
        environments.append(
            {
                "packages": entry.packages,
                "key": environment_key(entry.packages, settings),
                "command": cmd,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    dest.mkdir(parents=True, exist_ok=True)
    if environments:
        shutil.rmtree(dest / "uv-cache", ignore_errors=True)
        shutil.move(str(cache), dest / "uv-cache")
    manifest = {"stactools_spec": settings.stactools_spec, "environments": environments}
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m item_gen.prebake",
        description="Build the package environments named in PREBAKED_PACKAGES into DEST "
        "(DEST/uv-cache and DEST/manifest.json), as the ItemGen image build does.",
    )
    parser.add_argument("dest", type=Path)
    parser.add_argument(
        "--packages",
        default=os.environ.get("PREBAKED_PACKAGES", ""),
        help='JSON list: ["stactools-landsat", {"package": "…", "extra_packages": ["…"]}] '
        "(default: $PREBAKED_PACKAGES)",
    )
    args = parser.parse_args(argv)
    try:
        entries = parse_packages(args.packages)
    except ValueError as e:
        raise SystemExit(f"prebake: PREBAKED_PACKAGES is not a list of packages: {e}") from None
    manifest = prebake(entries, args.dest, GenSettings())
    built = manifest["environments"]
    print(
        f"prebaked {len(built)} environment(s) into {args.dest}: "
        + ("; ".join(f"{' '.join(e['packages'])} ({e['seconds']} s)" for e in built) or "none"),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
