"""Item requests stay compatible with the original ItemRequest, and with fields added later."""

from __future__ import annotations

import logging

import pytest

from item_gen import models
from item_gen.errors import InvalidRequest
from item_gen.models import CollectionRequest, ItemRequest, parse_request


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test starts as a new process would: no unknown fields reported yet."""
    monkeypatch.setattr(models, "_warned", set())


def test_unknown_fields_are_accepted_and_named_in_a_warning(caplog):
    # GIVEN a request carrying fields this version does not know (a newer upstream, or a typo)
    obj = {
        "package_name": "stactools-x",
        "group_name": "x",
        "create_item_args": ["a.tif"],
        "request_id": "req-7",
        "priority": 3,
        "create_item_option": {"typo": "1"},
    }
    # WHEN it is parsed
    with caplog.at_level(logging.WARNING, logger="item_gen"):
        request = parse_request(obj)
    # THEN it is a normal item request, and one warning names the request and the unknown fields
    assert isinstance(request, ItemRequest)
    assert request.cli_args == ["a.tif"]
    [record] = [r for r in caplog.records if r.name.startswith("item_gen")]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "request req-7: ignoring unknown fields create_item_option, priority "
        "(known: collection_id, create_item_args, create_item_options, extra_packages, "
        "group_name, package_name, request_id); later requests with these fields are logged "
        "at debug level"
    )
    assert record.unknown_fields == ["create_item_option", "priority"]


def test_unknown_fields_of_a_collection_request_are_accepted(caplog):
    obj = {"package_name": "p", "group_name": "g", "create_collection_args": [], "x-trace": "1"}
    with caplog.at_level(logging.WARNING, logger="item_gen"):
        request = parse_request(obj)
    assert isinstance(request, CollectionRequest)
    [record] = [r for r in caplog.records if r.name.startswith("item_gen")]
    assert record.getMessage().startswith("request p g: ignoring unknown fields x-trace (known: ")


def test_known_fields_log_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger="item_gen"):
        parse_request({"package_name": "p", "group_name": "g"})
    assert [r for r in caplog.records if r.name.startswith("item_gen")] == []


def test_wrong_types_of_known_fields_are_still_rejected():
    with pytest.raises(InvalidRequest, match="create_item_args: Input should be a valid list"):
        parse_request({"package_name": "p", "group_name": "g", "create_item_args": "a.tif"})


def test_a_flood_of_unknown_fields_makes_one_short_warning(caplog):
    # GIVEN a request with 1000 unknown fields, one of them a 10,000-character name
    obj = {"package_name": "p", "group_name": "g", "request_id": "flood"}
    obj |= {f"f{n:04d}": n for n in range(999)}
    obj["é" * 10_000] = 1
    with caplog.at_level(logging.WARNING, logger="item_gen"):
        parse_request(obj)
    # THEN one warning names the first 20 (names cut at 64 characters) and counts the rest
    [record] = [r for r in caplog.records if r.name.startswith("item_gen")]
    message = record.getMessage()
    assert message.startswith("request flood: ignoring unknown fields f0000, f0001, ")
    assert ", f0019 and 980 more (known: " in message
    assert len(message) < 600
    assert len(record.unknown_fields) == 20


def test_the_same_unknown_fields_warn_once_then_at_debug_level(caplog):
    # GIVEN three requests with the same unknown field (an upstream addition, say)
    requests = [
        {"package_name": "p", "group_name": "g", "request_id": f"r{n}", "priority": n}
        for n in range(3)
    ]
    # WHEN they are parsed, as `stactools-ingest run` does for each request of a big file
    with caplog.at_level(logging.DEBUG, logger="item_gen"):
        for obj in requests:
            parse_request(obj)
    # THEN the first is a warning and the others, still naming their request, are debug lines
    records = [(r.levelname, r.getMessage()[:52]) for r in caplog.records]
    assert records == [
        ("WARNING", "request r0: ignoring unknown fields priority (known:"),
        ("DEBUG", "request r1: ignoring unknown fields priority (known:"),
        ("DEBUG", "request r2: ignoring unknown fields priority (known:"),
    ]
