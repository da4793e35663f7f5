"""The uv environment a request runs in, and whether the image holds it prebaked.

A request's package, its ``extra_packages`` and stactools make one uv environment. The image
build (``item_gen.prebake``) and the runtime both name it with ``uvx_prefix``, so they cannot
drift; the build's manifest lists what it baked, and a request whose environment is listed runs
with ``UV_OFFLINE=1``: no PyPI at run time, no resolution round trip on a cold start.
"""

from __future__ import annotations

import json
import os
import re
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


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def _canonical(requirement: str) -> str:
    """``Affine < 3`` and ``affine<3`` are one requirement (PEP 503 names, no spaces)."""
    text = "".join(requirement.split())
    name = _NAME.match(text)
    if name is None:
        return text
    return re.sub(r"[-_.]+", "-", name.group()).lower() + text[name.end() :].lower()


def environment_key(packages: Sequence[str], settings: GenSettings) -> list[str]:
    """What identifies an environment: uv builds the same one whatever the ``--with`` order
    or the spelling of a requirement."""
    return [
        _canonical(settings.stactools_spec),
        *sorted({_canonical(p) for p in [*packages, "requests"]}),
    ]


class Manifest:
    """The environments an image was built with; a missing manifest means none."""

    def __init__(self, keys: set[tuple[str, ...]]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, path: Path | None) -> Manifest:
        """What ``path`` lists; a missing file (an image without prebaked packages) lists none."""
        if path is None or not path.is_file():
            return cls(set())
        try:
            doc = json.loads(path.read_text())
            return cls({tuple(env["key"]) for env in doc.get("environments", [])})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RuntimeError(
                f"the prebaked environments' manifest {path} (PREBAKED_MANIFEST) is unreadable "
                f"({e}); rebuild the image (python -m item_gen.prebake writes it)"
            ) from e

    def covers(self, packages: Sequence[str], settings: GenSettings) -> bool:
        return tuple(environment_key(packages, settings)) in self.keys


_manifests: dict[Path | None, Manifest] = {}


def _manifest(settings: GenSettings) -> Manifest:
    """The image's manifest, read once per process."""
    path = settings.prebaked_manifest
    if path not in _manifests:
        _manifests[path] = Manifest.load(path)
    return _manifests[path]


def is_prebaked(packages: Sequence[str], settings: GenSettings) -> bool:
    """Whether the image holds this environment."""
    return _manifest(settings).covers(packages, settings)


DOWNLOADS_SUFFIX = "-downloads"
"""Environments the image lacks go to a cache of their own: ``$UV_CACHE_DIR-downloads``."""


def uv_environment(packages: Sequence[str], settings: GenSettings) -> dict[str, str] | None:
    """The process environment for a uvx command (None: this process's own).

    A prebaked environment runs offline. Any other one, in an image that has prebaked ones, is
    built in a cache of its own: the prebaked cache links to environments and wheels the image
    holds read-only, which uv cannot install from.
    """
    manifest = _manifest(settings)
    if manifest.covers(packages, settings):
        return {**os.environ, "UV_OFFLINE": "1"}
    if not manifest.keys or "UV_CACHE_DIR" not in os.environ:
        return None
    return {**os.environ, "UV_CACHE_DIR": os.environ["UV_CACHE_DIR"] + DOWNLOADS_SUFFIX}


UV_NETWORK_ERROR = re.compile(
    r"^(?:error|  cause): .*Failed to fetch: |^hint: Packages were unavailable because the "
    r"network was disabled",
    re.MULTILINE,
)
"""What uv itself (its own ``error:``/``cause:``/``hint:`` lines, not a package's traceback)
prints when it needed an index it could not reach."""

UV_ERROR_STATUS = 2
"""uv's exit status for its own errors (a Python traceback exits 1)."""


def unavailable(
    label: str, packages: Sequence[str], settings: GenSettings, status: int | None, stderr: str
) -> EnvironmentUnavailable | None:
    """The error for a command that failed because uv could not download its environment."""
    if status != UV_ERROR_STATUS or not UV_NETWORK_ERROR.search(stderr):
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
