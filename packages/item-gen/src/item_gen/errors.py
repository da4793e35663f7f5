"""ItemGen's errors; each names the request and what to do about it."""

from __future__ import annotations

from ingest_common.errors import PermanentError, TransientError


class InvalidRequest(PermanentError):
    """The message is not a valid item or collection request."""


class PackageFailed(PermanentError):
    """The stactools command exited non-zero or produced no usable STAC JSON."""


class RequestTimedOut(TransientError):
    """The stactools command ran past the per-request timeout and was killed.

    Transient: a slow source (S3, HTTP), a cold package environment or a busy host can make a
    request that normally fits run over, so SQS retries it; one that always times out reaches
    the DLQ through the queue's redrive policy after its receives.
    """


class PayloadTooLarge(PermanentError):
    """An item is over SNS's size limit and there is no payload bucket to put it in."""


class PublishFailed(TransientError):
    """SNS or S3 refused or failed the publish; the request is retried."""


class EnvironmentUnavailable(TransientError):
    """uv could not download the package environment of a request the image does not hold.

    Transient: PyPI outages pass, and SQS retries the request; a deployment with no route to PyPI
    fails the same way on every receive, so the reason says what to change.
    """
