"""The CDK app: `uv run cdk deploy --all` deploys network, database, ingestion (and STAC API)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

# `cdk` runs this file as a script; make `infrastructure` importable from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infrastructure.config import ConfigError, DeploymentConfig, load_config


def config_or_exit() -> DeploymentConfig:
    """The deployment settings, or one line on stderr naming file and key, and exit 1."""
    try:
        return load_config()
    except (ConfigError, FileNotFoundError) as e:
        # One line a person can act on, not a pydantic traceback inside `cdk synth` output.
        print(e, file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    # Before aws_cdk's import, whose jsii runtime prints its Node banners ahead of our line.
    CONFIG = config_or_exit()

from aws_cdk import App, Environment, Stack, Tags, Validations  # noqa: E402 (after the config check)
from cdk_nag import AwsSolutionsChecks  # noqa: E402 (after the config check)

from infrastructure.database import DatabaseStack  # noqa: E402 (after the config check)
from infrastructure.ingestion import IngestionStack  # noqa: E402 (after the config check)
from infrastructure.nag import suppress_findings  # noqa: E402 (after the config check)
from infrastructure.network import NetworkStack  # noqa: E402 (after the config check)
from infrastructure.stac_api import StacApiStack  # noqa: E402 (after the config check)


@dataclass
class Stacks:
    """The stacks of one deployment, for callers (and tests) that inspect them."""

    network: NetworkStack
    database: DatabaseStack
    ingestion: IngestionStack
    stac_api: StacApiStack | None = None

    def all(self) -> list[Stack]:
        """The stacks that exist in this deployment."""
        candidates = (self.network, self.database, self.ingestion, self.stac_api)
        return [stack for stack in candidates if stack is not None]


def build(app: App, config: DeploymentConfig, **stack_overrides) -> Stacks:
    """Add every stack of one deployment to the app."""
    env = None
    account = config.aws_account or os.environ.get("CDK_DEFAULT_ACCOUNT")
    if config.aws_account or config.aws_region:
        # Pinned only on request: env-agnostic stacks deploy to the CLI's account and region
        # and need no context lookups at synth time.
        env = Environment(
            account=account, region=config.aws_region or os.environ.get("CDK_DEFAULT_REGION")
        )
    prefix = config.prefix
    network = NetworkStack(app, f"{prefix}-network", config=config, env=env)
    database = DatabaseStack(app, f"{prefix}-database", config=config, network=network, env=env)
    ingestion = IngestionStack(
        app,
        f"{prefix}-ingestion",
        config=config,
        network=network,
        database=database,
        env=env,
        item_gen_code=stack_overrides.get("item_gen_code"),
        item_load_code=stack_overrides.get("item_load_code"),
        ingest_api_code=stack_overrides.get("ingest_api_code"),
    )
    stacks = Stacks(network=network, database=database, ingestion=ingestion)
    if config.stac_api.enabled:
        stacks.stac_api = StacApiStack(
            app,
            f"{prefix}-stac-api",
            config=config,
            network=network,
            database=database,
            env=env,
            code=stack_overrides.get("stac_api_code"),
        )
    for key, value in {"stage": config.stage, **config.tags}.items():
        Tags.of(app).add(key, value)
    suppress_findings(stacks.all(), config)
    return stacks


def main(config: DeploymentConfig) -> None:
    """Entry point for `cdk` (see cdk.json)."""
    app = App()
    build(app, config)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    app.synth()


if __name__ == "__main__":
    main(CONFIG)
