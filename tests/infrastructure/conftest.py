"""Fixtures for the CDK app tests: the app synthesized once per session, per configuration."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The CDK app is not an installed package; tests import it from the repository root.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

pytest.importorskip("aws_cdk", reason="the deploy dependency group is not installed")


def _isolate_from_local_config(patch: pytest.MonkeyPatch, tmp: Path) -> None:
    """Keep a developer's config.yml and STACTOOLS_INGEST_* variables out of the tests."""
    for name in list(os.environ):
        if name.startswith("STACTOOLS_INGEST_"):
            patch.delenv(name)
    patch.setenv("STACTOOLS_INGEST_CONFIG", str(tmp / "no-config.yml"))


@pytest.fixture(autouse=True)
def _no_local_config(monkeypatch, tmp_path):
    """Every test starts from the defaults."""
    _isolate_from_local_config(monkeypatch, tmp_path)


@dataclass
class Synthesized:
    """One synthesized deployment: its config, stacks, templates and cdk-nag report."""

    config: object
    stacks: object
    templates: dict
    validation_report: dict | None
    outdir: Path

    def template(self, stack: str):
        """The assertions Template of one stack ('network', 'database', 'ingestion', ...)."""
        from aws_cdk.assertions import Template

        return Template.from_json(self.templates[stack])


def synthesize(outdir: Path, **overrides) -> Synthesized:
    """Synthesize the app with cdk-nag's AwsSolutions checks, as `cdk synth` would."""
    from aws_cdk import App, Validations
    from aws_cdk import aws_lambda as lambda_
    from cdk_nag import AwsSolutionsChecks

    from infrastructure.app import build
    from infrastructure.config import load_config
    from infrastructure.nag import unacknowledged_findings

    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    app = App(context=context, outdir=str(outdir))
    with pytest.MonkeyPatch.context() as patch:
        _isolate_from_local_config(patch, outdir)
        config = load_config(REPO_ROOT / "config.yml.example", **overrides)
    stacks = build(
        app,
        config,
        # eoapi-cdk builds the STAC API package with Docker at synth time; tests swap the code.
        stac_api_code=lambda_.Code.from_inline("def handler(event, context):\n    return {}\n"),
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    error = None
    try:
        assembly = app.synth()
    except Exception as e:  # the validation plugin fails synthesis; the test reports why
        error = e
        assembly = None
    report_file = outdir / "validation-report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    if assembly is None:
        open_findings = "\n".join(
            f"{rule} at {path}" for rule, path in unacknowledged_findings(report or {})
        )
        raise AssertionError(f"synthesis failed: {error}\n{open_findings}")
    templates = {
        stack.stack_name.removeprefix(f"{config.prefix}-"): assembly.get_stack_by_name(
            stack.stack_name
        ).template
        for stack in stacks.all()
    }
    return Synthesized(config, stacks, templates, report, outdir)


@pytest.fixture(scope="session")
def default_app(tmp_path_factory) -> Synthesized:
    """The app with every setting at its default (config.yml.example as shipped)."""
    return synthesize(tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="session")
def full_app(tmp_path_factory) -> Synthesized:
    """The app with every optional feature on."""
    return synthesize(
        tmp_path_factory.mktemp("cdk-full"),
        alarms={"email": "ops@example.com"},
        stac_api={"enabled": True},
        database={"db_allowed_cidrs": ["192.0.2.0/24"], "multi_az": True},
        item_load={
            "s3_event_buckets": ["stac-landing"],
            "readable_buckets": ["stac-archive"],
            "href_schemes": ["s3"],
            "maintenance_interval_minutes": 10,
            "log_retention_days": 400,
        },
        item_gen={
            "prebaked_packages": [
                "stactools-landsat",
                {"package": "stactools-glad-glclu2020==0.1.1", "extra_packages": ["affine<3"]},
            ],
            "readable_buckets": ["my-bucket"],
            "warm_runner": False,
            "warm_workers_per_env": 3,
            "warm_max_environments": 2,
        },
        network={"nat_gateways": 2},
    )


@pytest.fixture
def synth():
    """``synthesize`` for a test that needs its own settings."""
    return synthesize
