"""The image build and the runtime name a package environment the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import fake_uvx
from geotiffs import GLAD_EXTRAS, GLAD_PACKAGE, glad_item_request

from item_gen import environments
from item_gen.environments import environment_key, is_prebaked, uv_environment, uvx_prefix
from item_gen.errors import EnvironmentUnavailable, PackageFailed
from item_gen.models import parse_request
from item_gen.prebake import PrebakedPackage, parse_packages, prebake_command
from item_gen.runner import command_for, run_once
from item_gen.settings import GenSettings


def test_the_build_bakes_the_environment_requests_ask_for(tmp_path):
    settings = GenSettings()
    request = parse_request(glad_item_request(tmp_path / "t.tif", tmp_path))
    entry = PrebakedPackage(package=GLAD_PACKAGE, extra_packages=GLAD_EXTRAS)

    run_time = command_for(request, tmp_path / "item.json", settings)
    build_time = prebake_command(entry, settings)

    assert build_time[: build_time.index("stac")] == run_time[: run_time.index("stac")]
    assert build_time[: build_time.index("stac")] == uvx_prefix(request.packages, settings)


def test_an_environment_is_the_same_whatever_the_order_of_its_packages():
    settings = GenSettings()
    assert environment_key(["b", "a", "requests"], settings) == environment_key(
        ["a", "b"], settings
    )
    assert environment_key(["a"], settings) != environment_key(["a", "b"], settings)


@pytest.fixture
def manifest(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(environments, "_manifests", {})
    path = tmp_path / "manifest.json"
    key = environment_key([GLAD_PACKAGE, *GLAD_EXTRAS], GenSettings())
    path.write_text(json.dumps({"environments": [{"key": key}]}))
    return path


def test_only_a_prebaked_environment_runs_offline(manifest):
    settings = GenSettings(prebaked_manifest=manifest)

    assert is_prebaked([*reversed(GLAD_EXTRAS), GLAD_PACKAGE], settings)
    assert uv_environment([GLAD_PACKAGE, *GLAD_EXTRAS], settings)["UV_OFFLINE"] == "1"
    assert uv_environment([GLAD_PACKAGE], settings) is None  # without affine<3: another one
    other_stactools = GenSettings(prebaked_manifest=manifest, stactools_spec="stactools==0.5.2")
    assert uv_environment([GLAD_PACKAGE, *GLAD_EXTRAS], other_stactools) is None


def test_an_image_without_a_manifest_prebakes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(environments, "_manifests", {})
    settings = GenSettings(prebaked_manifest=tmp_path / "absent.json")
    assert uv_environment([GLAD_PACKAGE, *GLAD_EXTRAS], settings) is None


def test_prebaked_packages_are_names_or_packages_with_extras():
    entries = parse_packages(
        json.dumps(["stactools-landsat", {"package": GLAD_PACKAGE, "extra_packages": GLAD_EXTRAS}])
    )
    assert [e.packages for e in entries] == [["stactools-landsat"], [GLAD_PACKAGE, *GLAD_EXTRAS]]
    assert parse_packages("") == []
    with pytest.raises(ValueError, match="is not a package requirement"):
        parse_packages(json.dumps([{"package": "x", "extra_packages": ["$(reboot)"]}]))


def test_spelling_of_a_requirement_does_not_make_another_environment(manifest):
    settings = GenSettings(prebaked_manifest=manifest)
    assert is_prebaked([GLAD_PACKAGE.upper(), "Affine < 3"], settings)
    assert is_prebaked([GLAD_PACKAGE.replace("-", "_"), "affine<3"], settings)


def test_a_corrupt_manifest_names_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(environments, "_manifests", {})
    path = tmp_path / "manifest.json"
    path.write_text('{"environments": [{"key": ["stac')
    with pytest.raises(RuntimeError, match=r"manifest\.json \(PREBAKED_MANIFEST\) is unreadable"):
        uv_environment([GLAD_PACKAGE], GenSettings(prebaked_manifest=path))


def uvx_failing(tmp_path: Path, stderr: str, status: int) -> str:
    return str(fake_uvx(tmp_path, f"cat >&2 <<'END'\n{stderr}\nEND\nexit {status}"))


UV_DNS_FAILURE = """error: Request failed after 3 retries in 6.3s
  cause: Failed to fetch: https://pypi.org/simple/stactools/
  cause: dns error"""


def test_a_download_uv_could_not_make_is_transient_and_says_what_to_do(tmp_path):
    settings = GenSettings(uvx=uvx_failing(tmp_path, UV_DNS_FAILURE, 2))
    request = parse_request(glad_item_request(tmp_path / "t.tif", tmp_path, request_id="r"))

    with pytest.raises(EnvironmentUnavailable, match="is not prebaked in this image") as error:
        run_once(request, settings)
    assert "item_gen.prebaked_packages" in str(error.value)
    assert "cause: Failed to fetch: https://pypi.org/simple/stactools/" in str(error.value)


def test_a_package_printing_a_fetch_error_is_its_own_failure(tmp_path):
    traceback = "Traceback …\nRuntimeError: Failed to fetch: https://example.com/tile.tif (404)"
    settings = GenSettings(uvx=uvx_failing(tmp_path, traceback, 1))
    request = parse_request(glad_item_request(tmp_path / "t.tif", tmp_path, request_id="r"))

    with pytest.raises(PackageFailed, match=r"Failed to fetch: https://example\.com"):
        run_once(request, settings)
