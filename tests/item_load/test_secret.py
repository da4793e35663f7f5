"""PGSTAC_SECRET_ARN: ItemLoad connects with the secret eoapi-cdk writes, not libpq variables."""

from __future__ import annotations

import json

import boto3
import pytest
from factories import (
    LambdaContext,
    collection,
    failed_ids,
    item,
    sns_envelope,
    sqs_event,
    sqs_record,
)
from moto import mock_aws

from item_load import db
from item_load import handler as load_handler
from item_load.settings import LoadSettings

COLL = "secret-collection"


@pytest.fixture
def secret_arn(pgstac, aws_env, monkeypatch):
    """A Secrets Manager secret in eoapi-cdk's shape pointing at this test's pgstac."""
    info = pgstac.conninfo
    with mock_aws():
        arn = boto3.client("secretsmanager").create_secret(
            Name="pgstac-ingest",
            SecretString=json.dumps(
                {
                    "host": info["host"],
                    "port": info["port"],
                    "dbname": info["dbname"],
                    "username": info["user"],
                    "password": info.get("password", "any: the test server trusts TCP"),
                    "engine": "postgres",
                }
            ),
        )["ARN"]
        # The libpq variables now lead nowhere: only the secret can reach the database.
        monkeypatch.setenv("PGPORT", "1")
        monkeypatch.setenv("PGDATABASE", "no_such_database")
        monkeypatch.setenv("PGHOST", "192.0.2.1")
        db._secret.cache_clear()
        yield arn
        db._secret.cache_clear()


def test_handler_loads_a_batch_through_the_secret(pgstac, secret_arn, monkeypatch):
    # GIVEN the handler configured with PGSTAC_SECRET_ARN only
    settings = LoadSettings(pgstac_secret_arn=secret_arn)
    monkeypatch.setattr(load_handler.connections, "settings", settings)
    load_handler.connections.discard()
    records = [sqs_record(sns_envelope(collection(COLL)))]
    records += [sqs_record(sns_envelope(item(f"s{n}", COLL))) for n in range(3)]
    try:
        # WHEN a batch of a collection and three items is handled
        response = load_handler.handler(sqs_event(records), LambdaContext())
    finally:
        load_handler.connections.discard()
    # THEN all of it lands in the database the secret names
    assert failed_ids(response) == set()
    assert pgstac.item_ids(COLL) == ["s0", "s1", "s2"]


def test_secret_fields_become_connection_arguments(pgstac, secret_arn):
    info = pgstac.conninfo
    kwargs = db.connection_kwargs(LoadSettings(pgstac_secret_arn=secret_arn))
    assert (kwargs["host"], kwargs["port"], kwargs["dbname"], kwargs["user"]) == (
        info["host"],
        info["port"],
        info["dbname"],
        info["user"],
    )
    assert "TimeZone=UTC" in kwargs["options"]
