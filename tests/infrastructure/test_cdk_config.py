"""Deployment settings: defaults, config.yml.example, environment overrides, clear errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from infrastructure.config import (
    ConfigError,
    DeploymentConfig,
    ItemLoadConfig,
    load_config,
    locked_pypgstac_version,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "config.yml.example"


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths |= _field_paths(annotation, f"{prefix}{name}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def _yaml_paths(data: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            paths |= _yaml_paths(value, f"{prefix}{key}.")
        else:
            paths.add(f"{prefix}{key}")
    return paths


def test_example_lists_every_setting_with_its_default():
    # GIVEN the shipped example and the settings model
    data = yaml.safe_load(EXAMPLE.read_text())
    # THEN it names every setting, and every value in it is the default
    assert _yaml_paths(data) == _field_paths(DeploymentConfig)
    assert load_config(EXAMPLE) == DeploymentConfig()


def test_missing_default_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("STACTOOLS_INGEST_CONFIG", str(tmp_path / "absent.yml"))
    assert load_config() == DeploymentConfig()


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.yml"):
        load_config(tmp_path / "absent.yml")


def test_file_then_environment(tmp_path, monkeypatch):
    # GIVEN a config file and an environment variable for the same setting
    config_file = tmp_path / "config.yml"
    config_file.write_text("stage: prod\nitem_load:\n  batch_size: 500\n  memory_mb: 2048\n")
    monkeypatch.setenv("STACTOOLS_INGEST_CONFIG", str(config_file))
    monkeypatch.setenv("STACTOOLS_INGEST_ITEM_LOAD__BATCH_SIZE", "200")
    # WHEN it is loaded
    config = load_config()
    # THEN the environment wins, and the file's other values stay
    assert config.stage == "prod"
    assert config.item_load.batch_size == 200
    assert config.item_load.memory_mb == 2048
    assert config.prefix == "stactools-ingest-prod"


def test_default_visibility_timeouts_follow_aws_guidance():
    config = DeploymentConfig()
    assert config.item_gen.queue_visibility_timeout_seconds == 6 * 600
    assert config.item_load.queue_visibility_timeout_seconds == 6 * 300 + 60


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"item_load": {"batch_size": 10_001}}, "batch_size 10001 is above the SQS maximum"),
        (
            {"item_load": {"max_batching_window_seconds": 301}},
            "max_batching_window_seconds 301 is above the SQS maximum of 300",
        ),
        (
            {"item_load": {"batch_size": 100, "max_batching_window_seconds": 0}},
            "needs max_batching_window_seconds >= 1",
        ),
        (
            {"item_gen": {"visibility_timeout_seconds": 900}},
            "visibility_timeout_seconds 900 is too short for timeout_seconds 600",
        ),
        (
            {"item_load": {"timeout_seconds": 900, "visibility_timeout_seconds": 1800}},
            "too short for timeout_seconds 900",
        ),
        ({"item_gen": {"request_timeout_seconds": 600}}, "must be below timeout_seconds"),
        ({"database": {"db_allowed_cidrs": ["0.0.0.0/0"]}}, "must not contain 0.0.0.0/0"),
        ({"database": {"db_allowed_cidrs": ["::/0"]}}, "must not contain ::/0"),
        ({"database": {"db_allowed_cidrs": ["not-a-cidr"]}}, "does not appear to be an IPv4"),
        ({"database": {"publicly_accessible": True}}, "db_allowed_cidrs is empty"),
        ({"database": {"pgstac_version": "0.9.9"}}, "does not match pypgstac 0.9.8 in uv.lock"),
        ({"item_load": {"s3_event_buckets": ["s3://bucket"]}}, "is not an S3 bucket name"),
        ({"item_gen": {"prebaked_packages": ["x; rm -rf /"]}}, "is not a package requirement"),
        ({"item_load": {"log_retention_days": 31}}, "log_retention_days must be one of"),
        ({"item_load": {"max_concurrency": 1}}, "greater than or equal to 2"),
        ({"stage": "has spaces"}, "must start with a letter"),
        ({"database": {"postgres_version": "17"}}, "give the minor version too, like '17.9'"),
        ({"item_laod": {}}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_fail_with_a_clear_message(overrides, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        DeploymentConfig(**overrides)


def test_pgstac_default_matches_the_lock():
    assert DeploymentConfig().database.pgstac_version == locked_pypgstac_version() == "0.9.8"


def test_typo_in_config_is_one_line_naming_file_key_and_allowed_keys(tmp_path):
    # GIVEN a config.yml with a misspelt key in the item_load section
    config_file = tmp_path / "config.yml"
    config_file.write_text("item_load:\n  batchsize: 500\n")
    # WHEN the CDK app's entry point runs on it (as `cdk synth` does)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infrastructure" / "app.py")],
        env={**os.environ, "STACTOOLS_INGEST_CONFIG": str(config_file)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # THEN it exits 1 with one line: the file, the key and the keys that section allows
    allowed = ", ".join(ItemLoadConfig.model_fields)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"{config_file}: unknown key item_load.batchsize (allowed in item_load: {allowed})\n"
    )


def test_bad_value_in_config_is_one_line(tmp_path):
    config_file = tmp_path / "config.yml"
    config_file.write_text("item_gen:\n  warm_workers_per_env: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value) == (
        f"{config_file}: item_gen.warm_workers_per_env: Input should be greater than or equal to 1"
    )


def test_yaml_syntax_error_is_one_line(tmp_path):
    config_file = tmp_path / "config.yml"
    config_file.write_text("item_load:\n  batch_size: [1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value) == (
        f"{config_file}: not valid YAML: expected ',' or ']', but got '<stream end>' "
        "(line 3, column 1)"
    )
