"""ItemGen cold starts: the prebaked image before and after issue 13, in a Lambda-like sandbox.

Run with ``uv run python benchmarks/cold_start.py`` (needs bubblewrap; about two minutes). It
builds the GLAD environment the way the image build does (``python -m item_gen.prebake``), then
starts cold containers (bubblewrap: read-only root, empty writable /tmp, ``HOME=/tmp``) that run the
image's entry point and call the ItemGen handler twice, and reports, as medians over ``--rounds``:

- restore: the image's entry point alone (the Lambda runtime replaced by ``true``), less an empty
  sandbox's start;
- first request: the first invocation (uvx finds the environment; the warm runner starts a worker);
- warm request: the second invocation in the same container.

``before`` is the layout this issue replaced, given the best case (the request's exact
environment prebaked): the entry point copies the whole cache (``cp -a``) and uvx, not told the
environment is prebaked, resolves against PyPI first, so it has the network. ``after`` is the
image now: the entry point copies the index and links the environments; requests run offline,
with no network at all. The last line is JSON with the figures and the after/before ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "images")]

from factories import sns_envelope, sqs_record  # noqa: E402
from geotiffs import GLAD_EXTRAS, GLAD_PACKAGE, glad_item_request, glad_tiles  # noqa: E402
from sandbox import IMAGE_DIR, build_prebaked, item_gen_env, sandbox, start_container  # noqa: E402

BEFORE_ENTRYPOINT = "da6ac29:infrastructure/item_gen_entrypoint.sh"
"""The entry point before this change: ``cp -a`` of the whole prebaked cache."""


def event(n: int) -> dict:
    request = glad_item_request(
        Path("/data/2020/50N_010E.tif"), Path("/data"), request_id=f"glad-{n}"
    )
    return {"Records": [sqs_record(sns_envelope(request), message_id=f"glad-{n}")]}


def before_layout(after: Path, root: Path) -> Path:
    """The same cache with the old entry point and no manifest (so nothing runs offline)."""
    before = root / "before"
    before.mkdir()
    # Hard links: the same files, in a directory the sandbox can see (it cannot follow a link
    # into this machine's /tmp).
    shutil.copytree(after / "uv-cache", before / "uv-cache", symlinks=True, copy_function=os.link)
    old = subprocess.run(
        ["git", "-C", str(REPO), "show", BEFORE_ENTRYPOINT],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (before / "entrypoint.sh").write_text(old)
    (before / "entrypoint.sh").chmod(0o755)
    return before


def restore_seconds(image: Path) -> float:
    """The entry point's own time: with ``true`` as the runtime, less an empty sandbox's."""

    def run(cmd: list[str]) -> float:
        began = time.perf_counter()
        done = sandbox(cmd, {IMAGE_DIR: image, "/lambda-entrypoint.sh": TRUE}, item_gen_env())
        assert done.returncode == 0, done.stderr
        return time.perf_counter() - began

    return run([f"{IMAGE_DIR}/entrypoint.sh", "handler"]) - run([str(TRUE)])


TRUE = Path("/bin/true")


def measure(image: Path, tiles: Path, work: Path, network: bool, warm: str) -> dict:
    result = start_container(
        image, [event(1), event(2)], work, binds={"/data": tiles}, network=network, WARM_RUNNER=warm
    )
    failures = [r["batchItemFailures"] for r in result["responses"] if r["batchItemFailures"]]
    if failures or len(result["published"]) != 2:
        raise SystemExit(f"a request failed: {failures}\n{result['logs'][-3000:]}")
    return {
        "restore": restore_seconds(image),
        "first": result["seconds"][0],
        "warm": result["seconds"][1],
        "restored_mb": result["restored_bytes"] / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        root = Path(tmp)
        print("building the prebaked GLAD environment as the image build does …", file=sys.stderr)
        (root / "after").mkdir()
        after = build_prebaked(
            root / "after",
            root / "build" / "uv-cache",
            [{"package": GLAD_PACKAGE, "extra_packages": GLAD_EXTRAS}],
        )
        before = before_layout(after, root)
        tiles = root / "tiles"
        glad_tiles(tiles)
        figures: dict[str, dict[str, float]] = {}
        for warm in ("true", "false"):
            for name, image, network in (("before", before, True), ("after", after, False)):
                runs = []
                for n in range(args.rounds):
                    work = root / f"{name}-{warm}-{n}"
                    work.mkdir()
                    runs.append(measure(image, tiles, work, network, warm))
                key = f"{name}/{'warm-runner' if warm == 'true' else 'one-shot'}"
                figures[key] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                f = figures[key]
                print(
                    f"{key:22} restore {f['restore']:5.2f} s  first request {f['first']:6.2f} s  "
                    f"warm request {f['warm']:6.3f} s  copied to /tmp {f['restored_mb']:6.0f} MB",
                    file=sys.stderr,
                )
    ratios = {}
    for mode in ("warm-runner", "one-shot"):
        b, a = figures[f"before/{mode}"], figures[f"after/{mode}"]
        ratios[mode] = {
            "cold_start_after_over_before": round(
                (a["restore"] + a["first"]) / (b["restore"] + b["first"]), 2
            ),
            "warm_after_over_before": round(a["warm"] / b["warm"], 2),
        }
    print(json.dumps({"figures": figures, "ratios": ratios}))


if __name__ == "__main__":
    main()
