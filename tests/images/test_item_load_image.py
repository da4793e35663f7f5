"""ItemLoad as Lambda runs it: read-only root, only /tmp writable, HOME=/tmp.

The network stays (the function reaches pgstac over it); what is checked is that importing the
handler and loading a batch write nothing outside /tmp.
"""

from __future__ import annotations

import sys

from factories import COLL, collection, item, sns_envelope, sqs_event, sqs_record
from sandbox import LAMBDA_ENV, RUNTIME, invoke


def test_the_handler_imports_and_loads_with_only_tmp_writable(pgstac, tmp_path):
    records = [
        sqs_record(sns_envelope(collection(COLL)), message_id="collection"),
        sqs_record(sns_envelope(item("a")), message_id="a"),
        sqs_record(sns_envelope(item("b")), message_id="b"),
    ]
    info = pgstac.conninfo
    env = {
        **LAMBDA_ENV,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "POWERTOOLS_METRICS_NAMESPACE": "sandbox",
        "PGHOST": info["host"],
        "PGPORT": str(info["port"]),
        "PGUSER": info["user"],
        "PGPASSWORD": info["password"],
        "PGDATABASE": pgstac.name,
    }

    result = invoke(
        [sys.executable, str(RUNTIME), "item_load.handler.handler"],
        [sqs_event(records)],
        tmp_path,
        env,
        network=True,
    )

    assert result["responses"] == [{"batchItemFailures": []}], result["logs"]
    assert pgstac.item_ids(COLL) == ["a", "b"]
