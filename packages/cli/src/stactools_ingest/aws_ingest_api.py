"""Ask a deployment's ingest API (output ``IngestApiUrl``) with SigV4 and the caller's AWS
credentials, as API Gateway's IAM authorization requires: ``status --stack``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

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
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read() or b"null")
        except ValueError:
            body = None
        return e.code, body
    except (urllib.error.URLError, TimeoutError) as e:
        raise IngestApiError(f"cannot reach the ingest API at {url}: {e}") from None


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


def list_requests(base_url: str, params: dict[str, str]) -> dict[str, Any]:
    """One page of the deployment's ledger (``requests``, ``next_token``)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    status, body = signed_get(f"{base_url.rstrip('/')}/ingest/requests?{query}")
    if status != 200:
        raise IngestApiError(f"the ingest API refused the question ({_detail(status, body)})")
    return body
