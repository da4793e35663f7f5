"""Lambda image assets: built from the workspace lock, with a small build context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from item_gen.prebake import MANIFEST_NAME, PrebakedPackage, parse_packages

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("stage", "package"), [("item_gen", "item-gen"), ("item_load", "item-load")]
)
def test_dockerfile_installs_from_the_lock(stage, package):
    dockerfile = (REPO_ROOT / "infrastructure" / f"{stage}.Dockerfile").read_text()
    assert "FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}" in dockerfile
    assert "uv export --frozen --no-dev --no-default-groups --no-emit-workspace" in dockerfile
    assert f"--package {package} -o /src/requirements.txt" in dockerfile
    assert f"/tmp/src/ingest-common /tmp/src/{package}" in dockerfile
    assert f'CMD ["{stage}.handler.handler"]' in dockerfile


def test_item_gen_image_prebakes_through_item_gen_and_points_the_runtime_at_its_manifest():
    # What the build and the restore do is run in a sandbox by tests/images; these are the
    # paths that tie the Dockerfile to them.
    dockerfile = (REPO_ROOT / "infrastructure" / "item_gen.Dockerfile").read_text()
    assert 'ARG PREBAKED_PACKAGES=""' in dockerfile
    assert "python -m item_gen.prebake /opt/stactools-envs" in dockerfile
    assert f"PREBAKED_MANIFEST=/opt/stactools-envs/{MANIFEST_NAME}" in dockerfile
    assert "UV_CACHE_DIR=/tmp/uv-cache" in dockerfile
    assert "COPY infrastructure/item_gen_entrypoint.sh /opt/stactools-envs/entrypoint.sh" in (
        dockerfile
    )


def _image_assets(synthesized) -> dict:
    assets = {}
    for manifest in synthesized.outdir.glob("*.assets.json"):
        for asset in json.loads(manifest.read_text()).get("dockerImages", {}).values():
            assets[asset["source"].get("dockerFile")] = asset["source"]
    return assets


def test_image_assets_have_a_small_build_context(full_app):
    assets = _image_assets(full_app)
    assert {"infrastructure/item_gen.Dockerfile", "infrastructure/item_load.Dockerfile"} <= set(
        assets
    )
    build_args = assets["infrastructure/item_gen.Dockerfile"]["dockerBuildArgs"]
    assert parse_packages(build_args["PREBAKED_PACKAGES"]) == [
        PrebakedPackage(package="stactools-landsat"),
        PrebakedPackage(package="stactools-glad-glclu2020==0.1.1", extra_packages=("affine<3",)),
    ]
    for dockerfile in ("infrastructure/item_gen.Dockerfile", "infrastructure/item_load.Dockerfile"):
        context = full_app.outdir / assets[dockerfile]["directory"]
        files = [p.relative_to(context) for p in context.rglob("*") if p.is_file()]
        top = {p.parts[0] for p in files}
        assert top <= {"pyproject.toml", "uv.lock", "README.md", "packages", "infrastructure"}
        assert not any(
            part in {".venv", ".git", "__pycache__", "tests", "cdk.out", "node_modules"}
            for p in files
            for part in p.parts
        )
        assert sum((context / p).stat().st_size for p in files) < 20 * 1024 * 1024


def test_stac_api_is_optional(default_app, full_app):
    assert "stac-api" not in default_app.templates
    assert "StacApiUrl" in full_app.templates["stac-api"]["Outputs"]
