"""Stands in for the Lambda runtime (``/lambda-entrypoint.sh``) inside the sandbox.

Invoked as ``lambda_runtime.py <module.function>`` (the image's CMD) with a JSON list of events in
the file ``$SANDBOX_EVENTS``: calls the handler with each in turn (warm invocations of one
container), under moto, and prints one JSON line after ``RESULT:`` with the responses, their
durations, what reached the ItemLoad topic, and how much the entry point wrote to /tmp.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    from moto import mock_aws

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for factories
    from factories import LambdaContext

    started = float(os.environ.get("SANDBOX_STARTED", "nan"))
    ready = time.time()
    with open(os.environ["SANDBOX_EVENTS"]) as f:
        events = json.load(f)
    with mock_aws():
        import boto3

        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        topic = sns.create_topic(Name="item-load")["TopicArn"]
        queue = sqs.create_queue(QueueName="item-load")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=arn["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        os.environ["ITEM_LOAD_TOPIC_ARN"] = topic
        module, function = sys.argv[1].rsplit(".", 1)
        handler = getattr(importlib.import_module(module), function)
        responses, seconds = [], []
        for event in events:
            began = time.perf_counter()
            responses.append(handler(event, LambdaContext()))
            seconds.append(time.perf_counter() - began)
        published = []
        while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages"):
            published += [json.loads(m["Body"]) for m in batch]
            for m in batch:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    cache = os.environ.get("UV_CACHE_DIR", "/tmp/uv-cache")
    restored = subprocess.run(["du", "-s", "-B1", cache], capture_output=True, text=True)
    print(
        "RESULT:"
        + json.dumps(
            {
                "responses": responses,
                "seconds": seconds,
                "start_seconds": ready - started,
                # the ledger's status reports apart from the documents
                "published": [m for m in published if m.get("type") != "stactools_ingest:status"],
                "reports": [m for m in published if m.get("type") == "stactools_ingest:status"],
                "restored_bytes": int(restored.stdout.split()[0])
                if restored.returncode == 0
                else 0,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
