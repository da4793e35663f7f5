"""The uv environment a request runs in, and whether the image holds it prebaked.

A request's package, its ``extra_packages`` and stactools make one uv environment. The image
build (``item_gen.prebake``) and the runtime both name it with ``uvx_prefix``, so they cannot
drift; the build's manifest lists what it baked, and a request whose environment is listed runs
with ``UV_OFFLINE=1``: no PyPI at run time, no resolution round trip on a cold start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from item_gen.errors import EnvironmentUnavailable
from item_gen.settings import GenSettings


def uvx_prefix(packages: Sequence[str], settings: GenSettings) -> list[str]:
    """``uvx --with … --from stactools``: the environment a request's package runs in.

    stactools' CLI imports ``requests`` without depending on it, so it always comes along.
    """
    cmd = [settings.uvx]
    for package in [*packages, "requests"]:
        cmd += ["--with", package]
    return [*cmd, "--from", settings.stactools_spec]


def environment_key(packages: Sequence[str], settings: GenSettings) -> list[str]:
    """What identifies an environment: uv builds the same one whatever the ``--with`` order."""
    return [settings.stactools_spec, *sorted({*packages, "requests"})]


class Manifest:
    """The environments an image was built with; a missing manifest means none."""

    def __init__(self, keys: set[tuple[str, ...]]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, path: Path | None) -> Manifest:
        """What ``path`` lists; a missing file (an image without prebaked packages) lists none."""
        if path is None or not path.is_file():
            return cls(set())
        doc = json.loads(path.read_text())
        return cls({tuple(env["key"]) for env in doc.get("environments", [])})

    def covers(self, packages: Sequence[str], settings: GenSettings) -> bool:
        return tuple(environment_key(packages, settings)) in self.keys


_manifests: dict[Path | None, Manifest] = {}


def is_prebaked(packages: Sequence[str], settings: GenSettings) -> bool:
    """Whether the image holds this environment (the manifest is read once per process)."""
    path = settings.prebaked_manifest
    if path not in _manifests:
        _manifests[path] = Manifest.load(path)
    return _manifests[path].covers(packages, settings)


def uv_environment(packages: Sequence[str], settings: GenSettings) -> dict[str, str] | None:
    """The process environment for a uvx command: offline when the environment is prebaked."""
    if not is_prebaked(packages, settings):
        return None
    return {**os.environ, "UV_OFFLINE": "1"}


NETWORK_MARKERS = ("Failed to fetch: ", "network was disabled")
"""What uv (not the package) prints when it needed an index it could not reach."""


def unavailable(
    label: str, packages: Sequence[str], settings: GenSettings, stderr: str
) -> EnvironmentUnavailable | None:
    """The error for a command that failed because uv could not download its environment."""
    if not any(marker in stderr for marker in NETWORK_MARKERS):
        return None
    env = ", ".join(environment_key(packages, settings))
    if is_prebaked(packages, settings):
        what = (
            f"its environment ({env}) is prebaked but not in the uv cache at "
            f"{os.environ.get('UV_CACHE_DIR', 'the default location')}; the image's entry point "
            "restores it there when a container starts: was the image started without it?"
        )
    else:
        what = (
            f"its environment ({env}) is not prebaked in this image and uv could not download "
            "it; add the package and its extra_packages to item_gen.prebaked_packages (no PyPI "
            "at run time), or give ItemGen a route to PyPI (network.nat_gateways >= 1)"
        )
    return EnvironmentUnavailable(f"request {label}: {what}. uv said: {stderr}")
