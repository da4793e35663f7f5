"""Ask a deployment's ingest API (output ``IngestApiUrl``) with SigV4 and the caller's AWS
credentials, as API Gateway's IAM authorization requires: ``status --stack``."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from ingest_common.ledger import PAGE_MAX
from stactools_ingest.aws_stack import AwsOpsError

TIMEOUT_SECONDS = 30


class IngestApiError(AwsOpsError):
    """The ingest API answered with an error, or could not be reached."""


def _region(url: str, session: boto3.Session) -> str:
    """The region to sign for: the API's own (…execute-api.REGION.amazonaws.com), else the
    session's."""
    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    if "execute-api" in parts and parts.index("execute-api") + 1 < len(parts):
        return parts[parts.index("execute-api") + 1]
    if not session.region_name:
        raise AwsOpsError("no AWS region configured: set AWS_REGION or a profile's region")
    return session.region_name


def signed_get(url: str, session: boto3.Session | None = None) -> tuple[int, Any]:
    """GET ``url`` signed with SigV4 for execute-api; the status and the decoded JSON body."""
    session = session or boto3.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise AwsOpsError("no AWS credentials found: configure a profile or AWS_* variables")
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", _region(url, session)).add_auth(
        request
    )
    prepared = urllib.request.Request(url, headers=dict(request.headers.items()), method="GET")
    try:
        with urllib.request.urlopen(prepared, timeout=TIMEOUT_SECONDS) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read() or b"null")
        except (ValueError, OSError, http.client.HTTPException):
            body = None
        return e.code, body
    except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, cut short
        raise IngestApiError(f"cannot reach the ingest API at {url}: {e}") from None
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        raise IngestApiError(
            f"{url} answered {status} with something that is not JSON ({raw[:80]!r}): is "
            "IngestApiUrl the stack's ingest API, and nothing (a proxy) in between?"
        ) from None


def _detail(status: int, body: Any) -> str:
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"{status}: {detail}" if detail else f"{status}"


def request_status(base_url: str, request_id: str) -> dict[str, Any] | None:
    """One request's ledger row from the deployment, or None when it has none."""
    status, body = signed_get(
        f"{base_url.rstrip('/')}/ingest/requests/{quote(request_id, safe='')}"
    )
    if status == 404:
        return None
    if status != 200:
        raise IngestApiError(f"the ingest API refused the question ({_detail(status, body)})")
    return body


class NoSuchRoute(IngestApiError):
    """The deployment's API predates this route: redeploy to get it."""


def _get(base_url: str, path: str, params: dict[str, str | None]) -> Any:
    # RFC 3986 encoding (a space is %20): what API Gateway signs on its side
    query = urlencode({k: v for k, v in params.items() if v is not None}, quote_via=quote)
    status, body = signed_get(f"{base_url.rstrip('/')}{path}?{query}")
    if status == 404:
        raise NoSuchRoute(f"the ingest API has no {path} ({_detail(status, body)})")
    if status != 200:
        raise IngestApiError(f"the ingest API refused the question ({_detail(status, body)})")
    return body


def list_requests(base_url: str, params: dict[str, str | None], limit: int) -> dict[str, Any]:
    """The newest ``limit`` rows of the deployment's ledger, page after page
    (``requests``, and ``next_token`` where more remain)."""
    rows: list[dict[str, Any]] = []
    token = None
    while True:
        page_size = min(PAGE_MAX, limit - len(rows))
        body = _get(
            base_url, "/ingest/requests", {**params, "limit": str(page_size), "token": token}
        )
        rows += body["requests"]
        token = body.get("next_token")
        if not token or len(rows) >= limit:
            return {"requests": rows, "next_token": token}


def counts(base_url: str, params: dict[str, str | None]) -> dict[str, int] | None:
    """How many of the deployment's requests are in each state; None from a deployment whose
    API predates ``/ingest/counts``."""
    try:
        return _get(base_url, "/ingest/counts", params)["counts"]
    except NoSuchRoute:
        return None
