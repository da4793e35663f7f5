"""Publish messages to SNS topics in ``publish_batch`` calls: at most 10 messages and 256 KiB
a call, entries SNS reports failed retried with backoff, optionally from several threads.

Whole-call throttling is botocore's job (give a client with ``SNS_CONFIG``: adaptive retry
mode); what botocore cannot retry are the single entries a successful call reports failed.
Shared by the CLI's ``submit``/``inventory``/``crawl`` and the ingest API's Lambda.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ingest_common.envelope import SNS_MAX_BYTES
from ingest_common.errors import IngestError

SNS_BATCH_ENTRIES = 10

# Whole calls: botocore retries throttling and the service's own errors, adapting its rate.
SNS_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 10})

# Failed entries worth another try: throttling and the service's own trouble, never bad input.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "KMSThrottling",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


class PublishAborted(IngestError):
    """SNS refused a whole call for a reason retrying cannot fix (missing topic, no permission).

    Not a TransientError: the same call fails the same way until the deployment is fixed.
    """


def attributes_size(attributes: dict[str, dict[str, str]]) -> int:
    """What message attributes add to a message's size as SNS counts it (name, type, value)."""
    return sum(
        len(name.encode()) + len(a["DataType"].encode()) + len(a["StringValue"].encode())
        for name, a in attributes.items()
    )


def string_attributes(values: dict[str, str | None] | None) -> dict[str, dict[str, str]]:
    """SNS string message attributes from ``{name: value}``; None values are left out."""
    return {
        name: {"DataType": "String", "StringValue": value}
        for name, value in (values or {}).items()
        if value
    }


@dataclass
class PublishSummary:
    """What a publish run did; ``errors`` name each failed input by its source (file:line)."""

    published: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)
    submission_id: str | None = None

    @property
    def rate(self) -> float:
        """Messages published per second."""
        return self.published / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary ``--json`` prints."""
        return {
            "published": self.published,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "errors": self.errors,
            "submission_id": self.submission_id,
        }


@dataclass
class _Pending:
    source: str
    message: str
    size: int
    token: Any = None
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)


class BatchPublisher:
    """Buffers messages per topic and sends them with SNS ``publish_batch``.

    A call holds at most 10 messages adding up to at most 256 KiB. A whole call is retried by
    botocore (give a client from ``sns_client``); entries a call reports failed for throttling or
    the service's own trouble are retried here with jittered exponential backoff. An entry that
    still fails, or that SNS rejects as bad input, is reported by its source.

    With ``workers`` > 1, batches are sent by that many threads at once (boto3 clients are
    thread-safe), at most two batches per worker waiting. Batches then reach SNS out of input
    order, so SNS's Timestamp no longer follows the input's line order: use it only where order
    carries no meaning (item requests of distinct hrefs), never for two versions of one item.
    """

    def __init__(
        self,
        sns: Any,
        *,
        max_attempts: int = 8,
        base_delay: float = 0.2,
        max_delay: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        on_error: Callable[[str, str], None] | None = None,
        on_progress: Callable[[PublishSummary], None] | None = None,
        workers: int = 1,
        on_settled: Callable[[Any], None] | None = None,
        attributes: dict[str, str] | None = None,
    ) -> None:
        self.sns = sns
        # String message attributes every message carries (the submission id).
        self.attributes = string_attributes(attributes)
        self.on_settled = on_settled
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.on_error = on_error
        self.on_progress = on_progress
        self.summary = PublishSummary()
        self._buffers: dict[str, list[_Pending]] = {}
        self._started = time.monotonic()
        self._lock = threading.RLock()  # the summary and the callbacks, across sending threads
        self._pool = ThreadPoolExecutor(workers, "publish") if workers > 1 else None
        self._slots = threading.BoundedSemaphore(2 * workers)
        self._aborted: BaseException | None = None

    def fail(self, source: str, reason: str, token: Any = None) -> None:
        """Count an input that will not be published (malformed, invalid, too large).

        ``on_settled`` receives ``token`` (the caller's own key for the input), else ``source``.
        """
        with self._lock:
            self.summary.failed += 1
            self.summary.errors.append({"source": source, "reason": reason})
            if self.on_error:
                self.on_error(source, reason)
            if self.on_settled:
                self.on_settled(source if token is None else token)
            self._progress()

    def add(
        self,
        topic_arn: str,
        message: str,
        source: str,
        token: Any = None,
        attributes: dict[str, str | None] | None = None,
    ) -> None:
        """Queue one message for a topic, sending the topic's batch when it is full.

        ``attributes``: this message's own string attributes (its request id), beside the ones
        every message carries; SNS counts them in the message's size.
        """
        own = {**self.attributes, **string_attributes(attributes)}
        size = len(message.encode()) + attributes_size(own)
        if size > SNS_MAX_BYTES:
            self.fail(
                source,
                f"message is {size} bytes, over SNS's 256 KiB limit; upload the document to S3 "
                'and submit {"href": "s3://…"} instead',
                token,
            )
            return
        buffer = self._buffers.setdefault(topic_arn, [])
        if len(buffer) == SNS_BATCH_ENTRIES or sum(p.size for p in buffer) + size > SNS_MAX_BYTES:
            self._dispatch(topic_arn, list(buffer))
            buffer.clear()
        buffer.append(_Pending(source, message, size, token, own))

    def close(self) -> PublishSummary:
        """Send what is buffered, wait for every batch, and return the summary."""
        try:
            for topic_arn, buffer in self._buffers.items():
                if buffer:
                    self._dispatch(topic_arn, list(buffer))
                    buffer.clear()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        self._raise_if_aborted()
        self.summary.seconds = time.monotonic() - self._started
        return self.summary

    def _dispatch(self, topic_arn: str, batch: list[_Pending]) -> None:
        """Send ``batch`` now, or hand it to a sending thread once one of its slots is free."""
        self._raise_if_aborted()
        if self._pool is None:
            self._send(topic_arn, batch)
            return
        self._slots.acquire()
        future = self._pool.submit(self._send, topic_arn, batch)
        future.add_done_callback(self._sent)

    def _sent(self, future: Future[None]) -> None:
        self._slots.release()
        error = future.exception()
        if error is not None and self._aborted is None:
            self._aborted = error

    def _raise_if_aborted(self) -> None:
        """Re-raise, in the caller's thread, what stopped a sending thread (PublishAborted)."""
        if self._aborted is not None:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            raise self._aborted

    def _delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1.0)

    def _send(self, topic_arn: str, batch: list[_Pending]) -> None:
        pending = dict(enumerate(batch))
        reasons: dict[int, str] = {}
        for attempt in range(self.max_attempts):
            if attempt:
                self.sleep(self._delay(attempt - 1))
            try:
                response = self.sns.publish_batch(
                    TopicArn=topic_arn,
                    PublishBatchRequestEntries=[
                        {"Id": str(i), "Message": p.message, "MessageAttributes": p.attributes}
                        for i, p in pending.items()
                    ],
                )
            except ClientError as e:
                # botocore has already retried the whole call (adaptive mode) when that could help
                code = e.response["Error"].get("Code", "")
                if code not in RETRYABLE_CODES:
                    with self._lock:
                        self.summary.seconds = time.monotonic() - self._started
                    raise PublishAborted(
                        f"SNS refused publishing to {topic_arn} ({code}: "
                        f"{e.response['Error'].get('Message', '')}); "
                        f"{self.summary.published} published before it stopped"
                    ) from e
                reasons = {i: f"{code} after botocore's retries" for i in pending}
                break
            except BotoCoreError as e:  # connection trouble that outlasted botocore's retries
                reasons = {i: f"{e} after botocore's retries" for i in pending}
                break
            with self._lock:
                for ok in response.get("Successful", []):
                    sent = pending.pop(int(ok["Id"]), None)
                    self.summary.published += 1
                    if sent is not None and self.on_settled:
                        self.on_settled(sent.source if sent.token is None else sent.token)
            retry: dict[int, _Pending] = {}
            for bad in response.get("Failed", []):
                index = int(bad["Id"])
                reason = f"{bad.get('Code')}: {bad.get('Message', '')}".strip()
                if bad.get("SenderFault") and bad.get("Code") not in RETRYABLE_CODES:
                    bad_one = pending.pop(index)
                    self.fail(bad_one.source, f"SNS rejected it ({reason})", bad_one.token)
                else:
                    retry[index] = pending.pop(index)
                    reasons[index] = f"{reason} after {attempt + 1} attempts"
            pending = retry
            with self._lock:
                self._progress()
            if not pending:
                return
        for index, p in pending.items():
            self.fail(
                p.source, f"not published: {reasons.get(index, 'retries exhausted')}", p.token
            )

    def _progress(self) -> None:
        if self.on_progress:
            self.summary.seconds = time.monotonic() - self._started
            self.on_progress(self.summary)
