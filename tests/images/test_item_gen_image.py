"""The ItemGen image as Lambda runs it: read-only root, only /tmp writable, HOME=/tmp, no network.

The prebaked cache is built the way infrastructure/item_gen.Dockerfile builds it (``python -m
item_gen.prebake`` with ``PREBAKED_PACKAGES``); the image's real entry point restores it into the
sandbox's empty /tmp and then starts the (stand-in) Lambda runtime, which calls the real handler.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import sns_envelope, sqs_record
from geotiffs import GLAD_EXTRAS, GLAD_PACKAGE, glad_item_request, glad_tiles
from sandbox import build_prebaked, start_container


@pytest.fixture(scope="module")
def prebaked(tmp_path_factory) -> Path:
    """``/opt/stactools-envs`` with the GLAD environment, built as the image build builds it."""
    return build_prebaked(
        tmp_path_factory.mktemp("image"),
        tmp_path_factory.mktemp("build") / "uv-cache",
        [{"package": GLAD_PACKAGE, "extra_packages": GLAD_EXTRAS}],
    )


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("glad")
    glad_tiles(root)
    return root


def invoke(
    prebaked: Path,
    tiles: Path,
    tmp_path: Path,
    requests: list[dict],
    network: bool = False,
    **env: str,
) -> dict:
    """One cold container, one SQS batch of ``requests``."""
    event = {"Records": [sqs_record(sns_envelope(r), message_id=r["request_id"]) for r in requests]}
    result = start_container(
        prebaked, [event], tmp_path, binds={"/data": tiles}, network=network, **env
    )
    return {**result, "response": result["responses"][0]}


def glad_request(request_id: str) -> dict:
    return glad_item_request(Path("/data/2020/50N_010E.tif"), Path("/data"), request_id=request_id)


@pytest.mark.parametrize("warm", ["true", "false"], ids=["warm-worker", "one-shot"])
def test_a_prebaked_request_publishes_its_item_with_no_network(prebaked, tiles, tmp_path, warm):
    result = invoke(prebaked, tiles, tmp_path, [glad_request("glad")], WARM_RUNNER=warm)

    assert result["response"] == {"batchItemFailures": []}, result["logs"]
    assert [doc["id"] for doc in result["published"]] == ["2020_50N_010E"]
    assert result["published"][0]["assets"]["data"]["href"] == "/data/2020/50N_010E.tif"
    assert [(r["state"], r["generated"]) for r in result["reports"]] == [("generated", 1)]


def test_the_restore_copies_little_and_links_the_environments(prebaked, tiles, tmp_path):
    result = invoke(prebaked, tiles, tmp_path, [glad_request("glad")])

    image_bytes = sum(p.stat().st_size for p in (prebaked / "uv-cache").rglob("*") if p.is_file())
    assert image_bytes > 100 * 1024 * 1024  # a real environment: numpy, rasterio, …
    assert result["restored_bytes"] < image_bytes / 10


def test_a_package_that_is_not_prebaked_fails_with_what_to_do(prebaked, tiles, tmp_path):
    other = {
        "package_name": "stactools-landsat",
        "group_name": "landsat",
        "create_item_args": ["/data/2020/50N_010E.tif"],
        "request_id": "landsat",
    }
    result = invoke(prebaked, tiles, tmp_path, [other, glad_request("glad")])

    assert result["response"] == {"batchItemFailures": [{"itemIdentifier": "landsat"}]}
    assert [doc["id"] for doc in result["published"]] == ["2020_50N_010E"]
    failed = [
        json.loads(line) for line in result["logs"].splitlines() if '"request failed"' in line
    ]
    assert len(failed) == 1 and failed[0]["message_id"] == "landsat"
    reason = failed[0]["reason"]
    assert (
        "request landsat: its environment (stactools==0.5.3, requests, stactools-landsat)" in reason
    )
    assert "is not prebaked in this image and uv could not download it" in reason
    assert "item_gen.prebaked_packages" in reason and "network.nat_gateways" in reason


def test_a_package_that_is_not_prebaked_is_downloaded_when_there_is_a_network(
    prebaked, tiles, tmp_path
):
    # Not the prebaked environment (one more package), but mostly made of the same wheels:
    # installing it must not trip over the prebaked cache the image holds read-only.
    request = {**glad_request("other"), "extra_packages": ["affine<3", "tomli"]}
    result = invoke(prebaked, tiles, tmp_path, [request], network=True, WARM_RUNNER="false")

    assert result["response"] == {"batchItemFailures": []}, result["logs"][-3000:]
    assert [doc["id"] for doc in result["published"]] == ["2020_50N_010E"]
