"""``status --stack``: asking a deployment's ledger through its ingest API with SigV4.

API Gateway cannot run here, so a small HTTP server stands in for it: it checks the request's
SigV4 signature (recomputed with botocore from the caller's credentials, as IAM auth would),
then hands API Gateway's payload-2.0 event to the real ingest API Lambda, which reads the
real pgstac of the test.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from click.testing import CliRunner
from factories import COLL, LambdaContext, collection, item, sns_envelope, sqs_event, sqs_record
from moto import mock_aws
from moto_stack import STACK

from ingest_api import handler as api
from item_load import handler as load_handler
from stactools_ingest.commands import status

AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"execute-api/aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>[0-9a-f]{64})"
)


class Gateway(BaseHTTPRequestHandler):
    """API Gateway with IAM auth, in front of the ingest API Lambda."""

    calls: list[str] = []
    missing: frozenset[str] = frozenset()  # paths a deployment from before them lacks

    def log_message(self, *args) -> None:
        pass

    def _verified(self) -> bool:
        match = AUTH.fullmatch(self.headers.get("Authorization", ""))
        if not match:
            return False
        signed = match["signed"].split(";")
        # API Gateway decodes the query and signs its canonical form (RFC 3986: a space is
        # %20, never "+"); a client that signed something else is refused
        url = urlsplit(self.path)
        canonical = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, v in parse_qsl(url.query, keep_blank_values=True)
        )
        request = AWSRequest(
            method="GET",
            url=f"http://{self.headers['Host']}{url.path}" + (f"?{canonical}" if canonical else ""),
            headers={name: self.headers[name] for name in signed},
        )
        request.context["timestamp"] = self.headers["X-Amz-Date"]
        # IAM knows the caller's secret: the one the environment gives boto3 (moto's, here)
        secret = boto3.Session().get_credentials().get_frozen_credentials().secret_key
        token = self.headers.get("X-Amz-Security-Token")
        auth = SigV4Auth(Credentials(match["key"], secret, token), "execute-api", "us-east-1")
        expected = auth.signature(
            auth.string_to_sign(request, auth.canonical_request(request)), request
        )
        return expected == match["sig"]

    def do_GET(self) -> None:
        if not self._verified():
            self._send(403, {"message": "Forbidden"})
            return
        url = urlsplit(self.path)
        Gateway.calls.append(self.path)
        if url.path in Gateway.missing:
            self._send(404, {"message": "Not Found"})
            return
        event = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": url.path,
            "rawQueryString": url.query,
            "queryStringParameters": dict(parse_qsl(url.query)) or None,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "requestContext": {
                "domainName": self.headers["Host"],
                "http": {"method": "GET", "path": url.path, "sourceIp": "127.0.0.1"},
                "requestId": "r",
                "routeKey": "$default",
                "stage": "$default",
            },
            "isBase64Encoded": False,
        }
        response = api.handler(event, LambdaContext())
        self._send(response["statusCode"], json.loads(response["body"]))

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def deployment(aws_env, pgstac) -> Iterator[str]:
    """A stack whose IngestApiUrl output is the stand-in gateway; the ledger has 3 requests."""
    load_handler.connections.discard()
    docs = [collection(COLL), item("a"), {**item("b"), "properties": {}}]
    records = [
        sqs_record(sns_envelope(d, attributes={"request_id": f"r{n}"})) for n, d in enumerate(docs)
    ]
    load_handler.handler(sqs_event(records), LambdaContext())
    load_handler.connections.discard()
    api.connections.discard()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    with mock_aws():
        template = {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {"IngestApiUrl": {"Value": url}},
        }
        boto3.client("cloudformation").create_stack(
            StackName=STACK, TemplateBody=json.dumps(template)
        )
        Gateway.calls = []
        Gateway.missing = frozenset()
        yield url
    server.shutdown()
    api.connections.discard()


def invoke(args: list[str]):
    return CliRunner().invoke(status.status, args)


def test_status_of_one_request_asks_the_deployment_with_sigv4(deployment):
    result = invoke(["r1", "--stack", STACK, "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert (row["state"], row["items"]) == ("loaded", [{"collection": COLL, "id": "a"}])
    assert Gateway.calls == ["/ingest/requests/r1"]
    human = invoke(["r2", "--stack", STACK])
    assert "failed" in human.stdout and "datetime" in human.stdout


def test_status_lists_a_deployments_requests_with_filters(deployment):
    result = invoke(["--stack", STACK, "--state", "failed", "--since", "1h", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["request_id"] for r in json.loads(result.stdout)["requests"]] == ["r2"]


def test_an_unknown_request_or_a_bad_filter_is_one_line(deployment):
    unknown = invoke(["nobody", "--stack", STACK])
    assert unknown.exit_code == 1
    assert "no request 'nobody' in the ledger of" in str(unknown.exception)
    bad = invoke(["--stack", STACK, "--since", "yesterday"])
    assert bad.exit_code == 2 and "expected an age" in bad.output


def test_an_unsigned_request_is_refused_by_the_gateway(deployment):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(deployment + "ingest/requests/r1")
    assert refused.value.code == 403


def test_filters_with_spaces_and_unicode_are_signed_as_api_gateway_checks_them(deployment):
    result = invoke(["--stack", STACK, "--collection", "a b+c é", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["requests"] == []


def test_counts_cover_every_matching_request_not_only_the_page_shown(deployment):
    result = invoke(["--stack", STACK, "--since", "1h", "--limit", "1", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert len(answer["requests"]) == 1
    assert (answer["counts"]["loaded"], answer["counts"]["failed"]) == (2, 1)
    human = invoke(["--stack", STACK, "--since", "1h", "--limit", "1"])
    assert "loaded 2" in human.stdout and "failed 1" in human.stdout


def test_a_limit_over_one_page_pages_through_the_deployment(deployment, monkeypatch):
    result = invoke(["--stack", STACK, "--since", "1h", "--limit", "2500", "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(r["request_id"] for r in json.loads(result.stdout)["requests"]) == [
        "r0",
        "r1",
        "r2",
    ]
    # with pages of two, three rows take two pages, the second asked with the first's token
    from stactools_ingest import aws_ingest_api

    monkeypatch.setattr(aws_ingest_api, "PAGE_MAX", 2)
    Gateway.calls = []
    result = invoke(["--stack", STACK, "--since", "1h", "--limit", "3", "--json"])
    rows = json.loads(result.stdout)["requests"]
    assert sorted(r["request_id"] for r in rows) == ["r0", "r1", "r2"]
    pages = [c for c in Gateway.calls if c.startswith("/ingest/requests?")]
    assert len(pages) == 2 and "token=" in pages[1] and "limit=1" in pages[1]


def test_a_deployment_from_before_counts_still_lists(deployment):
    Gateway.missing = frozenset({"/ingest/counts"})
    result = invoke(["--stack", STACK, "--since", "1h", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert "counts are of the rows shown" in result.stderr


class NotTheApi(BaseHTTPRequestHandler):
    """What a proxy or a captive portal answers in the API's place: 200 and a web page."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        body = b"<html>sign in to the wifi</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_an_answer_that_is_not_the_apis_is_one_line(aws_env):
    from stactools_ingest.aws_ingest_api import IngestApiError, request_status

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotTheApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with mock_aws(), pytest.raises(IngestApiError, match="not JSON"):
            request_status(f"http://127.0.0.1:{server.server_port}/", "r1")
    finally:
        server.shutdown()
