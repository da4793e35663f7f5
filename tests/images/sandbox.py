"""Run a command the way Lambda runs a container image, without Docker: bubblewrap.

The sandbox's root is this machine's file system, read-only; ``/tmp`` is an empty writable
tmpfs (Lambda's ephemeral storage), ``HOME=/tmp``, and the network is cut unless asked for. Extra
read-only binds put files at the image's paths (``/opt/stactools-envs``,
``/lambda-entrypoint.sh``) even where this machine has a directory of its own.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

LAMBDA_ENV = {
    "HOME": "/tmp",
    "UV_CACHE_DIR": "/tmp/uv-cache",
    "UV_TOOL_DIR": "/tmp/uv-tools",
    "UV_LINK_MODE": "copy",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "LANG": "C.UTF-8",
}
"""What the ItemGen image sets (infrastructure/item_gen.Dockerfile) and Lambda provides."""

REPO_ROOT = Path(__file__).resolve().parents[2]

_HOST_ONLY = {"tmp", "proc", "dev", "sys", "old_root", "lost+found"}


def require_bwrap() -> str:
    """bubblewrap's path; CI installs it (.ci/run), elsewhere its absence skips the test."""
    path = shutil.which("bwrap")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(
                "bubblewrap is not installed; .ci/run installs it (apt-get install bubblewrap)"
            )
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    return path


def uv_binaries() -> Path:
    """The directory of the real uv/uvx executables (not a pyenv shim, which needs its HOME)."""
    candidates = [Path(sys.base_prefix) / "bin" / "uvx"]
    if found := shutil.which("uvx"):
        candidates.append(Path(found))
    candidates += [Path.home() / ".local" / "bin" / "uvx", Path("/usr/local/bin/uvx")]
    for path in candidates:
        if path.is_file() and path.read_bytes()[:4] == b"\x7fELF":
            return path.parent
    pytest.fail(f"no uvx executable among {', '.join(map(str, candidates))}")


def _mirror(directory: Path, holes: list[Path]) -> list[str]:
    """bwrap arguments that bind ``directory``'s children read-only, leaving room for ``holes``."""
    args: list[str] = []
    for child in sorted(directory.iterdir()):
        if directory == Path("/") and child.name in _HOST_ONLY:
            continue
        if child in holes:
            continue
        if (
            any(child in hole.parents for hole in holes)
            and child.is_dir()
            and not child.is_symlink()
        ):
            args += ["--dir", str(child), *_mirror(child, holes)]
        elif child.is_symlink():
            args += ["--symlink", os.readlink(child), str(child)]
        else:
            args += ["--ro-bind", str(child), str(child)]
    return args


def _code_under_tmp() -> list[Path]:
    """The repository, the venv and the interpreter, where they are under /tmp."""
    paths = {REPO_ROOT, Path(sys.prefix), Path(os.path.realpath(sys.executable)).parents[1]}
    tmp = Path("/tmp")
    return sorted(p for p in paths if tmp in p.parents)


def sandbox(
    cmd: list[str],
    binds: dict[str, Path],
    env: dict[str, str],
    *,
    network: bool = False,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in the sandbox; ``binds`` maps paths inside to read-only paths outside."""
    holes = [Path(inside) for inside in binds]
    args = [require_bwrap(), "--die-with-parent", "--unshare-pid", "--tmpfs", "/"]
    args += _mirror(Path("/"), holes)
    for inside, outside in binds.items():
        args += ["--ro-bind", str(outside), inside]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--chdir", "/tmp"]
    # The code under test may live in this machine's /tmp (a clone there, its venv): it stays
    # visible, read-only, inside the sandbox's own empty /tmp.
    for path in _code_under_tmp():
        args += ["--ro-bind", str(path), str(path)]
    if not network:
        args.append("--unshare-net")
    # Lambda runs the function as an unprivileged user: no capability to remount, bypass file
    # permissions or change ownership, even when the tests run as root.
    args += ["--remount-ro", "/", "--cap-drop", "ALL"]
    return subprocess.run(
        [*args, *cmd], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


IMAGE_DIR = "/opt/stactools-envs"
"""Where the ItemGen image keeps its prebaked environments and its entry point."""


def item_gen_env(**extra: str) -> dict[str, str]:
    """The ItemGen container's environment (Dockerfile ENV, CDK settings); the build's too."""
    uv_dir = uv_binaries()
    return {
        **LAMBDA_ENV,
        "PATH": f"{uv_dir}:/usr/local/bin:/usr/bin:/bin",
        "UVX": str(uv_dir / "uvx"),
        "UV_PYTHON": os.path.realpath(sys._base_executable),
        "PREBAKED_MANIFEST": f"{IMAGE_DIR}/manifest.json",
        "POWERTOOLS_METRICS_NAMESPACE": "sandbox",
        **extra,
    }


def build_prebaked(dest: Path, build_cache: Path, packages: list[dict]) -> Path:
    """``/opt/stactools-envs`` as infrastructure/item_gen.Dockerfile builds it, at ``dest``."""
    # The build has this machine's network settings (proxies, certificates), as `docker build` does.
    env = {
        **os.environ,
        **item_gen_env(UV_CACHE_DIR=str(build_cache), UV_COMPILE_BYTECODE="1"),
        "PREBAKED_PACKAGES": json.dumps(packages),
    }
    env.pop("PREBAKED_MANIFEST")
    env.pop("VIRTUAL_ENV", None)
    built = subprocess.run(
        [sys.executable, "-m", "item_gen.prebake", str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    # COPY infrastructure/item_gen_entrypoint.sh /opt/stactools-envs/entrypoint.sh
    shutil.copy(REPO_ROOT / "infrastructure" / "item_gen_entrypoint.sh", dest / "entrypoint.sh")
    return dest


def _host_network_env() -> dict[str, str]:
    """This machine's proxy and certificate settings, for a sandbox given the network."""
    names = ("PROXY", "SSL_CERT", "CA_BUNDLE", "UV_INDEX", "UV_NATIVE_TLS")
    return {k: v for k, v in os.environ.items() if any(n in k.upper() for n in names)}


RUNTIME = Path(__file__).with_name("lambda_runtime.py")


def invoke(
    cmd: list[str],
    events: list[dict],
    workdir: Path,
    env: dict[str, str],
    *,
    binds: dict[str, Path] | None = None,
    network: bool = False,
) -> dict:
    """Run ``cmd`` (which ends in the stand-in runtime) in the sandbox on ``events``; what the
    runtime reported, with the container's stdout (its logs) under ``logs``."""
    (workdir / "events.json").write_text(json.dumps(events))
    done = sandbox(
        cmd,
        binds={"/events.json": workdir / "events.json", **(binds or {})},
        env={**env, "SANDBOX_EVENTS": "/events.json", "SANDBOX_STARTED": repr(time.time())},
        network=network,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT:")]
    assert done.returncode == 0 and results, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return {**json.loads(results[-1].removeprefix("RESULT:")), "logs": done.stdout}


def start_container(
    image_dir: Path,
    events: list[dict],
    workdir: Path,
    *,
    binds: dict[str, Path] | None = None,
    network: bool = False,
    **env: str,
) -> dict:
    """A cold ItemGen container: the image's entry point (restore), then the stand-in Lambda
    runtime calling the handler with each event in turn."""
    runtime = workdir / "lambda-entrypoint.sh"
    python, script = shlex.quote(sys.executable), shlex.quote(str(RUNTIME))
    runtime.write_text(f'#!/bin/sh\nexec {python} {script} "$@"\n')
    runtime.chmod(0o755)
    return invoke(
        [f"{IMAGE_DIR}/entrypoint.sh", "item_gen.handler.handler"],
        events,
        workdir,
        {**(_host_network_env() if network else {}), **item_gen_env(**env)},
        binds={IMAGE_DIR: image_dir, "/lambda-entrypoint.sh": runtime, **(binds or {})},
        network=network,
    )
