"""What a message may make ItemLoad read: schemes, hosts, redirects, byte and time caps.

Every http case talks to a server this test starts on 127.0.0.1; nothing else is contacted.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber
from factories import item
from hrefserver import HrefHandler, serving
from moto import mock_aws

from ingest_common.errors import PermanentError, TransientError
from item_load import fetch as fetch_module
from item_load.errors import FetchError, FetchUnavailable, HrefRefused, InvalidMessage
from item_load.fetch import HrefFetcher, HrefPolicy, non_public_kind
from item_load.messages import BatchReader, Parsed, documents_from_message, parse_message
from item_load.settings import LoadSettings


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A local HTTP server; yields its base URL (http://127.0.0.1:PORT)."""
    with serving() as base:
        yield base


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat 127.0.0.1 (the test server) as a public host; every other address keeps its rule.

    Lets a test reach its own server with private hosts refused, so the redirect rules can be
    seen refusing the *next* hop.
    """
    real = fetch_module.non_public_kind
    test_server = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(
        fetch_module, "non_public_kind", lambda ip: None if ip == test_server else real(ip)
    )


def http_fetcher(**policy: object) -> HrefFetcher:
    """A fetcher that may use plain http (the test server has no TLS)."""
    return HrefFetcher(HrefPolicy(schemes=frozenset({"http", "https", "s3"}), **policy))


def reason(exc_info: pytest.ExceptionInfo) -> str:
    return str(exc_info.value)


# -- schemes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("href", "scheme"),
    [
        ("/proc/self/environ", "file"),
        ("file:///proc/self/environ", "file"),
        ("file://localhost/etc/hostname", "file"),
        ("relative/items.json", "file"),
        ("http://example.com/item.json", "http"),
        ("ftp://example.com/item.json", "ftp"),
    ],
)
def test_default_policy_refuses_other_schemes_without_reading(href, scheme):
    # GIVEN the Lambda's default policy (s3, https) and no fetcher passed in
    # WHEN a pointer names a local file or another scheme
    with pytest.raises(HrefRefused) as exc:
        documents_from_message({"href": href}, "m1", None)
    # THEN it is refused, permanently, saying which scheme and what is allowed
    assert isinstance(exc.value, PermanentError)
    assert reason(exc) == (
        f"{href}: scheme {scheme!r} is not allowed (HREF_SCHEMES=https,s3); nothing was read"
    )


def test_settings_parse_comma_separated_schemes(monkeypatch):
    monkeypatch.setenv("HREF_SCHEMES", "s3, HTTPS,file")
    monkeypatch.setenv("HREF_MAX_BYTES", "1024")
    monkeypatch.setenv("HREF_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("HREF_ALLOW_PRIVATE_HOSTS", "true")
    policy = HrefPolicy.from_settings(LoadSettings())
    assert policy == HrefPolicy(
        schemes=frozenset({"s3", "https", "file"}),
        max_bytes=1024,
        timeout_seconds=5.0,
        allow_private_hosts=True,
    )
    monkeypatch.setenv("HREF_SCHEMES", "s3,ftp")
    with pytest.raises(ValueError, match="unknown href scheme"):
        LoadSettings()


def test_default_settings_and_local_run_policy(monkeypatch):
    for name in ("HREF_SCHEMES", "HREF_MAX_BYTES", "HREF_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HREF_ALLOW_PRIVATE_HOSTS", raising=False)
    assert HrefPolicy.from_settings(LoadSettings()) == HrefPolicy(
        schemes=frozenset({"s3", "https"}),
        max_bytes=256 * 1024 * 1024,
        timeout_seconds=60.0,
        allow_private_hosts=False,
    )
    local = HrefPolicy.for_local_run(LoadSettings())
    assert local.schemes == {"s3", "https", "file"}
    assert local.allow_private_hosts is True


# -- hosts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "not globally routable"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),
        ("::ffff:127.0.0.1", "loopback (embedded in IPv6)"),
        ("::ffff:169.254.169.254", "link-local (embedded in IPv6)"),
        ("2002:7f00:1::", "loopback (embedded in IPv6)"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_non_public_addresses(address, kind):
    assert non_public_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    ("href", "host", "address", "kind"),
    [
        (
            "https://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
            "169.254.169.254",
            "link-local",
        ),
        (
            "https://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
            "127.0.0.1",
            "127.0.0.1",
            "loopback",
        ),
        ("https://[::1]/x.json", "::1", "::1", "loopback"),
        (
            "https://[::ffff:127.0.0.1]/x.json",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",  # how Python 3.11 prints the mapped address
            "loopback (embedded in IPv6)",
        ),
        ("https://10.0.0.5/x.json", "10.0.0.5", "10.0.0.5", "private"),
        ("https://localhost/x.json", "localhost", None, "loopback"),
    ],
)
def test_https_to_non_public_hosts_is_refused_before_connecting(href, host, address, kind):
    with pytest.raises(HrefRefused) as exc:
        documents_from_message({"href": href}, "m1", None)
    text = reason(exc)
    assert text.startswith(f"{href}: host {host!r} resolves to ")
    if address:
        assert f"resolves to {address}, a {kind} address" in text
    assert text.endswith(
        f"a {kind} address, which hrefs may not reach (HREF_ALLOW_PRIVATE_HOSTS=false); "
        "nothing was read"
    )


@pytest.mark.parametrize(
    "href", ["https://[::1/x.json", "https://example.com:99999/x", "https://h:p/"]
)
def test_malformed_url_is_a_clear_permanent_error(href):
    with pytest.raises(FetchError) as exc:
        documents_from_message({"href": href}, "m1", None)
    assert type(exc.value) is FetchError
    assert reason(exc).endswith("nothing was read")
    assert "malformed href" in reason(exc)


def test_query_string_of_a_presigned_url_is_never_echoed():
    href = "https://127.0.0.1/x.json?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA"
    with pytest.raises(HrefRefused) as exc:
        documents_from_message({"href": href}, "m1", None)
    assert reason(exc).startswith("https://127.0.0.1/x.json?…: host '127.0.0.1'")
    assert "deadbeef" not in reason(exc) and "AKIA" not in reason(exc)


# -- http through the local server --------------------------------------------------------------


def test_allowed_http_href_loads(server):
    fetcher = http_fetcher(allow_private_hosts=True)
    docs = documents_from_message({"href": f"{server}/item.json"}, "m1", None, fetcher)
    assert [d.body["id"] for d in docs] == ["served"]


def test_private_host_refused_unless_allowed(server):
    with pytest.raises(HrefRefused) as exc:
        http_fetcher()(f"{server}/item.json")
    assert reason(exc) == (
        f"{server}/item.json: host '127.0.0.1' resolves to 127.0.0.1, a loopback address, "
        "which hrefs may not reach (HREF_ALLOW_PRIVATE_HOSTS=false); nothing was read"
    )


def test_fetched_json_that_is_not_stac_leaks_no_keys_or_values(server):
    fetcher = http_fetcher(allow_private_hosts=True)
    with pytest.raises(InvalidMessage) as exc:
        documents_from_message({"href": f"{server}/secret.json?sig=abc"}, "m1", None, fetcher)
    assert reason(exc) == (
        f"{server}/secret.json?… is not a STAC Item, Collection, Catalog, FeatureCollection, "
        "Delete, href pointer or S3 event"
    )
    for leaked in ("aws_secret", "s3cr3t", "Token", "t0ken", "sig=abc"):
        assert leaked not in reason(exc)


def test_inline_message_that_is_not_stac_names_no_keys():
    with pytest.raises(InvalidMessage) as exc:
        documents_from_message({"password_field": 1, "type": "Catalogue"}, "m1", None)
    assert reason(exc) == (
        "message is not a STAC Item, Collection, Catalog, FeatureCollection, Delete, href "
        "pointer or S3 event (type='Catalogue')"
    )


def test_body_trickling_one_byte_at_a_time_stops_at_the_time_cap(server):
    fetcher = http_fetcher(allow_private_hosts=True, timeout_seconds=1.0)
    with pytest.raises(HrefRefused) as exc:
        fetcher(f"{server}/slow-body")
    assert reason(exc) == (
        f"{server}/slow-body: not read within 1 s (HREF_TIMEOUT_SECONDS); serve it faster or "
        "split it"
    )


def test_headers_trickling_forever_stop_at_the_time_cap(server):
    fetcher = http_fetcher(allow_private_hosts=True, timeout_seconds=1.0)
    with pytest.raises(HrefRefused) as exc:
        fetcher(f"{server}/slow-headers")
    assert reason(exc) == (
        f"{server}/slow-headers: not read within 1 s (HREF_TIMEOUT_SECONDS); serve it faster "
        "or split it"
    )


def test_endless_body_stops_at_the_byte_cap(server):
    fetcher = http_fetcher(allow_private_hosts=True, max_bytes=1024 * 1024)
    with pytest.raises(HrefRefused) as exc:
        fetcher(f"{server}/endless")
    assert reason(exc) == (
        f"{server}/endless: larger than the byte cap of 1048576 bytes (HREF_MAX_BYTES); "
        "split it into smaller files"
    )


def test_declared_length_over_the_cap_is_refused_before_reading(server):
    fetcher = http_fetcher(allow_private_hosts=True, max_bytes=1024)
    with pytest.raises(HrefRefused, match=r"/big-declared: larger than the byte cap of 1024 "):
        fetcher(f"{server}/big-declared")


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.2:9001/2018-06-01/runtime/invocation/next", "loopback"),
        ("http://[::1]/", "loopback"),
    ],
)
def test_redirect_to_a_non_public_host_is_refused(server, loopback_is_public, target, kind):
    # GIVEN a "public" server (the test's own) that redirects to the metadata service / loopback
    fetcher = http_fetcher()
    # WHEN an href points at it
    with pytest.raises(HrefRefused) as exc:
        fetcher(f"{server}/redirect?to={target}")
    # THEN the redirect target is checked like the href itself and nothing is read
    text = reason(exc)
    assert text.startswith(f"{server}/redirect?… redirected to ")
    assert f", a {kind} address, which hrefs may not reach" in text
    assert text.endswith("nothing was read")


def test_redirect_to_a_public_path_is_followed(server, loopback_is_public):
    fetcher = http_fetcher()
    assert json.loads(fetcher(f"{server}/redirect?to=/item.json"))["id"] == "served"


def test_redirect_to_file_or_a_refused_scheme_is_refused(server, loopback_is_public):
    fetcher = HrefFetcher(HrefPolicy(schemes=frozenset({"http", "file"})))
    with pytest.raises(HrefRefused) as exc:
        fetcher(f"{server}/redirect?to=file:///etc/passwd")
    assert reason(exc) == f"{server}/redirect?…: redirected to a 'file' href; nothing was read"
    https_only = HrefFetcher(HrefPolicy(schemes=frozenset({"http"})))
    with pytest.raises(HrefRefused) as exc:
        https_only(f"{server}/redirect?to=https://127.0.0.1/")
    assert reason(exc) == (
        f"{server}/redirect?… redirected to https://127.0.0.1/: scheme 'https' is not allowed "
        "(HREF_SCHEMES=http); nothing was read"
    )


def test_redirect_loop_stops(server, loopback_is_public):
    with pytest.raises(HrefRefused) as exc:
        http_fetcher()(f"{server}/loop")
    assert reason(exc) == f"{server}/loop: more than 5 redirects"


def test_http_status_classified(server):
    fetcher = http_fetcher(allow_private_hosts=True)
    with pytest.raises(FetchError) as exc:
        fetcher(f"{server}/missing.json")
    assert reason(exc) == f"{server}/missing.json: HTTP 404"
    with pytest.raises(FetchUnavailable) as exc:
        fetcher(f"{server}/busy")
    assert isinstance(exc.value, TransientError)
    assert reason(exc) == f"{server}/busy: HTTP 503; will retry"


# -- files --------------------------------------------------------------------------------------


def file_fetcher(**policy: object) -> HrefFetcher:
    return HrefFetcher(HrefPolicy(schemes=frozenset({"file"}), **policy))


def test_dev_zero_is_refused_as_not_a_regular_file():
    with pytest.raises(HrefRefused) as exc:
        file_fetcher(max_bytes=1024)("file:///dev/zero")
    assert reason(exc) == "file:///dev/zero: not a regular file; nothing was read"


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(HrefRefused) as exc:
        file_fetcher()(str(fifo))
    assert reason(exc) == f"{fifo}: not a regular file; nothing was read"


def test_file_over_the_cap_is_refused_without_reading_it(tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(1024**3)  # sparse: 1 GiB that would take seconds and a GiB to read
    with pytest.raises(HrefRefused) as exc:
        file_fetcher(max_bytes=1024)(big.as_uri())
    assert reason(exc) == (
        f"{big.as_uri()}: larger than the byte cap of 1024 bytes (HREF_MAX_BYTES); "
        "split it into smaller files"
    )


def test_proc_file_without_a_size_is_capped_while_reading():
    # /proc files report size 0; the cap must still hold while reading
    with pytest.raises(HrefRefused, match="larger than the byte cap of 8 bytes"):
        file_fetcher(max_bytes=8)("/proc/self/maps")


def test_remote_file_host_and_missing_file(tmp_path):
    with pytest.raises(HrefRefused) as exc:
        file_fetcher()("file://fileserver/share/x.json")
    assert reason(exc) == (
        "file://fileserver/share/x.json: file hrefs must name a local path; nothing was read"
    )
    missing = tmp_path / "nope.json"
    with pytest.raises(FetchError) as exc:
        file_fetcher()(missing.as_uri())
    assert reason(exc) == f"{missing.as_uri()}: no such file"


# -- s3 -----------------------------------------------------------------------------------------


@pytest.fixture
def s3(aws_env):
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="drop")
        yield client


def test_s3_object_over_the_cap_is_refused(s3):
    s3.put_object(Bucket="drop", Key="big.json", Body=b" " * 2048)
    s3.put_object(Bucket="drop", Key="ok.json", Body=json.dumps(item("s3item")).encode())
    fetcher = HrefFetcher(HrefPolicy(max_bytes=1024), s3_client_factory=lambda: s3)
    with pytest.raises(HrefRefused) as exc:
        fetcher("s3://drop/big.json")
    assert reason(exc) == (
        "s3://drop/big.json: larger than the byte cap of 1024 bytes (HREF_MAX_BYTES); "
        "split it into smaller files"
    )
    assert json.loads(fetcher("s3://drop/ok.json"))["id"] == "s3item"


def test_s3_missing_key_is_permanent(s3):
    fetcher = HrefFetcher(HrefPolicy(), s3_client_factory=lambda: s3)
    with pytest.raises(FetchError) as exc:
        fetcher("s3://drop/nope.json")
    assert type(exc.value) is FetchError
    assert reason(exc) == "s3://drop/nope.json: S3 answered NoSuchKey"


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("InternalError", 500)])
def test_s3_throttling_and_5xx_are_transient(aws_env, code, status):
    client = boto3.client("s3", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        with pytest.raises(FetchUnavailable) as exc:
            HrefFetcher(HrefPolicy(), s3_client_factory=lambda: client)("s3://drop/x.json")
    assert reason(exc) == f"s3://drop/x.json: S3 answered {code}; will retry"


# -- one batch's hrefs are read together -------------------------------------------------------


@pytest.fixture
def barrier() -> Iterator[threading.Barrier]:
    """/barrier/* answers 200 only while 4 requests are in flight at once (else 503 after 5 s)."""
    HrefHandler.barrier = threading.Barrier(4, timeout=5)
    HrefHandler.hits = []
    yield HrefHandler.barrier
    HrefHandler.barrier.abort()


def test_batch_reader_reads_hrefs_concurrently_and_maps_failures(server, barrier, tmp_path):
    # GIVEN four pointers that only a concurrent reader can satisfy, a refused one, a missing one,
    # a message that does not parse and an inline item
    reader = BatchReader(http_fetcher(allow_private_hosts=True), workers=8)
    entries = {f"p{n}": {"href": f"{server}/barrier/b{n}.json"} for n in range(4)}
    entries["refused"] = {"href": "/etc/hostname"}
    entries["missing"] = {"href": f"{server}/missing.json"}
    entries["busy"] = {"href": f"{server}/busy"}
    entries["inline"] = item("inline")

    def parse(message_id: str, message: object) -> Parsed:
        if message_id == "bad":
            raise InvalidMessage("not a message")
        return parse_message(message, message_id, None)

    # WHEN the batch is read
    reader.read([*entries.items(), ("bad", None)], parse)
    # THEN every pointer's documents come back, each failure with its own record and class
    assert [d.body["id"] for n in range(4) for d in reader.documents(f"p{n}")] == [
        "b0",
        "b1",
        "b2",
        "b3",
    ]
    assert [d.body["id"] for d in reader.documents("inline")] == ["inline"]
    with pytest.raises(HrefRefused, match=r"^/etc/hostname: scheme 'file' is not allowed"):
        reader.documents("refused")
    with pytest.raises(FetchError, match=r"/missing.json: HTTP 404$"):
        reader.documents("missing")
    with pytest.raises(FetchUnavailable, match=r"/busy: HTTP 503; will retry$"):
        reader.documents("busy")
    with pytest.raises(InvalidMessage, match=r"^not a message$"):
        reader.documents("bad")


def test_batch_reader_reads_a_shared_href_once(server):
    HrefHandler.hits = []
    reader = BatchReader(http_fetcher(allow_private_hosts=True), workers=4)
    href = {"href": f"{server}/item.json"}
    reader.read(
        [("a", href), ("b", href)],
        lambda message_id, message: parse_message(message, message_id, None),
    )
    assert [d.message_id for m in "ab" for d in reader.documents(m)] == ["a", "b"]
    assert HrefHandler.hits == ["/item.json"]


def test_hrefs_not_started_in_the_batchs_window_are_retried_later(server):
    # GIVEN one worker, a first href that takes its full 1 s time cap, and two more hrefs,
    # with half a second of the invocation left for starting reads
    reader = BatchReader(http_fetcher(allow_private_hosts=True, timeout_seconds=1.0), workers=1)
    entries = [
        ("slow", {"href": f"{server}/slow-body"}),
        ("late1", {"href": f"{server}/item.json"}),
        ("late2", {"href": f"{server}/item.json?copy=2"}),
    ]
    # WHEN the batch is read
    reader.read(entries, lambda mid, msg: parse_message(msg, mid, None), start_window=0.5)
    # THEN the slow one fails on its own cap, and the others are not started but retried later
    with pytest.raises(HrefRefused, match=r"/slow-body: not read within 1 s"):
        reader.documents("slow")
    for message_id in ("late1", "late2"):
        with pytest.raises(FetchUnavailable) as exc:
            reader.documents(message_id)
        assert reason(exc).endswith(
            ": not read, the invocation ran out of time for reading hrefs; will retry"
        )


class _Trickle:
    """A raw body that hands out one byte per read, slowly: an S3 connection gone bad."""

    def __init__(self) -> None:
        self.closed = False

    def read(self, amt: int | None = None) -> bytes:
        time.sleep(0.2)
        return b" "

    def close(self) -> None:
        self.closed = True


def test_s3_read_past_the_time_cap_is_transient(aws_env):
    from botocore.response import StreamingBody

    client = boto3.client("s3", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_response(
            "get_object",
            {"Body": StreamingBody(_Trickle(), 10_000_000), "ContentLength": 10_000_000},
            {"Bucket": "drop", "Key": "x.json"},
        )
        fetcher = HrefFetcher(HrefPolicy(timeout_seconds=0.5), s3_client_factory=lambda: client)
        with pytest.raises(FetchUnavailable) as exc:
            fetcher("s3://drop/x.json")
    assert reason(exc) == (
        "s3://drop/x.json: not read within 0.5 s (HREF_TIMEOUT_SECONDS); will retry"
    )


def test_malformed_redirect_location_is_a_clear_permanent_error(server, loopback_is_public):
    with pytest.raises(FetchError) as exc:
        http_fetcher()(f"{server}/redirect?to=http://[::1")
    assert type(exc.value) is FetchError
    assert reason(exc) == (
        f"{server}/redirect?…: redirected to a malformed href (Invalid IPv6 URL); nothing was read"
    )
