"""Container image assets: the build context, what stays out of it, and the target platform."""

from __future__ import annotations

from aws_cdk import IgnoreMode
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_

from infrastructure.config import REPO_ROOT

# The Lambda images build from the repository root (they need uv.lock and packages/). CDK copies
# the build context into cdk.out at synth time, so the context is an allow-list in .dockerignore
# syntax: everything is excluded except what the Dockerfiles COPY.
IMAGE_CONTEXT = str(REPO_ROOT)
IMAGE_CONTEXT_EXCLUDE = [
    "*",
    "!pyproject.toml",
    "!uv.lock",
    "!README.md",
    "!packages",
    "!infrastructure/item_gen.Dockerfile",
    "!infrastructure/item_load.Dockerfile",
    "!infrastructure/ingest_api.Dockerfile",
    "!infrastructure/item_gen_entrypoint.sh",
    "**/__pycache__",
    "**/*.pyc",
    "**/.venv",
    "**/.pytest_cache",
    "**/.ruff_cache",
    "**/node_modules",
    "**/tests",
]
IMAGE_IGNORE_MODE = IgnoreMode.DOCKER


def asset_platform(architecture: str) -> ecr_assets.Platform:
    """The Docker platform for an image asset, from a Lambda architecture name."""
    if architecture == "arm64":
        return ecr_assets.Platform.LINUX_ARM64
    return ecr_assets.Platform.LINUX_AMD64


def stage_image(
    dockerfile: str, architecture: str, build_args: dict[str, str] | None = None
) -> lambda_.DockerImageCode:
    """A stage's Lambda image, built from the repository root only at deploy time."""
    return lambda_.DockerImageCode.from_image_asset(
        IMAGE_CONTEXT,
        file=dockerfile,
        exclude=IMAGE_CONTEXT_EXCLUDE,
        ignore_mode=IMAGE_IGNORE_MODE,
        build_args=build_args,
        platform=asset_platform(architecture),
    )
