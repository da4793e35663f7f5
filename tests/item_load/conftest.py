"""Fixtures of the ItemLoad tests: the real Lambda entry point against this test's pgstac."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from factories import (
    COLL,
    MONTHLY,
    LambdaContext,
    collection,
    failed_ids,
    sns_envelope,
    sqs_event,
    sqs_record,
)

from item_load import handler as load_handler


@pytest.fixture
def load(pgstac) -> Iterator[Callable[[list[dict]], dict]]:
    """Call the real Lambda entry point against this test's database."""
    load_handler.connections.discard()

    def _load(records: list[dict]) -> dict:
        return load_handler.handler(sqs_event(records), LambdaContext())

    yield _load
    load_handler.connections.discard()


@pytest.fixture
def with_collection(pgstac, load):
    """This test's pgstac with the collection ``COLL`` loaded through the handler."""
    assert failed_ids(load([sqs_record(sns_envelope(collection(COLL)))])) == set()
    return pgstac


@pytest.fixture
def monthly(pgstac, load):
    """A collection partitioned by month, as pgstac users configure large ones."""
    assert failed_ids(load([sqs_record(sns_envelope(collection(MONTHLY)))])) == set()
    with pgstac.connect() as conn:
        conn.execute("UPDATE collections SET partition_trunc = 'month' WHERE id = %s", (MONTHLY,))
    return pgstac
