"""``stactools-ingest serve``: the STAC API, the ingest API and the status page, as a user runs it
(a subprocess on a real port), read with pystac-client, httpx and a headless chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from factories import collection, item
from geotiffs import GLAD_COLLECTION, glad_collection_request, glad_item_request, glad_tiles
from test_run import CLI, REPO, cli

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts"))
TERMINAL = {"loaded", "dead_lettered", "superseded"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A running ``serve`` and an HTTP client for it."""

    def __init__(self, base: str, proc: subprocess.Popen) -> None:
        self.base = base
        self.proc = proc
        self.http = httpx.Client(base_url=base, timeout=30)

    def post(self, body, **headers: str) -> httpx.Response:
        content = body if isinstance(body, str | bytes) else json.dumps(body)
        headers = {"content-type": "application/json", **headers}
        return self.http.post("/ingest/requests", content=content, headers=headers)

    def status(self, request_id: str) -> dict:
        return self.http.get(f"/ingest/requests/{request_id}").json()

    def settled(self, ids: list[str], timeout: float = 240) -> dict[str, dict]:
        """Wait until every request reached a final state; their ledger rows."""
        deadline = time.monotonic() + timeout
        while True:
            rows = {i: self.status(i) for i in ids}
            if all(r.get("state") in TERMINAL for r in rows.values()):
                return rows
            assert time.monotonic() < deadline, rows
            time.sleep(0.5)


@contextmanager
def serving(dsn: str, workers: int = 2) -> Iterator[Served]:
    """``stactools-ingest serve`` on a free port, answering; stopped with Ctrl-C after."""
    port = free_port()
    proc = subprocess.Popen(
        [CLI, "serve", "--dsn", dsn, "--port", str(port), "--workers", str(workers)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(base + "/", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "serve did not answer within 60 s"
        time.sleep(0.2)
    try:
        yield Served(base, proc)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the workers finish what they hold, then exit
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.fixture
def served(pgstac) -> Iterator[Served]:
    with serving(pgstac.dsn) as s:
        yield s


def test_what_run_loaded_is_searched_through_serve_with_pystac_client(pgstac, tmp_path):
    from pystac_client import Client

    # GIVEN a file of a collection and five items, loaded by `run`
    docs = [collection("ran")] + [item(f"r{n}", "ran", x=n * 10) for n in range(5)]
    path = tmp_path / "docs.ndjson"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    assert cli("run", str(path), "--dsn", pgstac.dsn, "-q").returncode == 0
    # WHEN serve runs over the same database
    with serving(pgstac.dsn, workers=0) as served:
        client = Client.open(served.base)
        # THEN pystac-client finds them, by collection and by place
        assert sorted(i.id for i in client.search(collections=["ran"]).items()) == [
            f"r{n}" for n in range(5)
        ]
        found = client.search(collections=["ran"], bbox=[19, 39, 22, 42])
        assert [i.id for i in found.items()] == ["r2"]
        # AND the ledger through the API says how each got there
        listed = served.http.get("/ingest/requests", params={"collection": "ran"}).json()
        assert {r["state"] for r in listed["requests"]} == {"loaded"}
        assert len(listed["requests"]) == 6


def test_posted_documents_land_and_pystac_client_finds_them(served):
    from pystac_client import Client

    # WHEN a collection and three items are posted as one list
    docs = [collection("posted")] + [item(f"p{n}", "posted", x=n * 10) for n in range(3)]
    response = served.post(docs)
    # THEN 202 with one request id per document, each with its status link
    assert response.status_code == 202, response.text
    ids = response.json()["request_ids"]
    assert len(ids) == 4
    assert response.json()["links"][1]["href"] == f"{served.base}/ingest/requests/{ids[1]}"
    rows = served.settled(ids)
    assert {r["state"] for r in rows.values()} == {"loaded"}
    assert rows[ids[2]]["items"] == [{"collection": "posted", "id": "p1"}]
    counts = served.http.get("/ingest/counts", params={"since": "1h"}).json()["counts"]
    assert counts["loaded"] == 4 and sum(counts.values()) == 4
    # AND pystac-client searches them through the STAC API at /
    client = Client.open(served.base)
    found = client.search(collections=["posted"], bbox=[9, 39, 12, 42])
    assert [i.id for i in found.items()] == ["p1"]
    assert [c.id for c in client.get_collections()] == ["posted"]


def test_bad_bodies_are_refused_with_the_reason_and_queue_nothing(served):
    assert served.post("{not json").status_code == 400
    assert "not valid JSON" in served.post("{not json").json()["detail"]
    assert served.post([]).status_code == 422
    # a list with one good document and one item without a datetime: nothing is queued
    undated = {**item("undated", "c"), "properties": {}}
    response = served.post([item("fine", "c"), undated])
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["index"] == 1 and "datetime" in problem["reason"]
    assert served.http.get("/ingest/requests").json()["requests"] == []
    # a status report is not the API's to accept
    report = {"type": "stactools_ingest:status", "request_id": "x", "state": "failed"}
    assert served.post(report).status_code == 422
    assert served.http.get("/ingest/requests/never-sent").status_code == 404
    # (stac-fastapi answers a query parameter that fails validation with 400)
    bad_state = served.http.get("/ingest/requests?state=exploded")
    assert bad_state.status_code == 400 and "state" in bad_state.text
    assert served.http.get("/ingest/requests?since=yesterday").status_code == 422
    assert served.http.get("/ingest/requests?token=garbage").status_code == 422


def test_ten_requests_one_bad_answered_through_the_api_and_shown_on_the_page(served, tmp_path):
    # GIVEN a collection request, eight tile requests and one for a file that does not exist
    corners = [(lon, lat) for lat in (40, 50) for lon in (0, 10, 20, 30)]
    tifs = glad_tiles(tmp_path, corners=corners)
    requests = [glad_collection_request(request_id="glad-collection")]
    requests += [glad_item_request(t, tmp_path, request_id=f"tile-{n}") for n, t in enumerate(tifs)]
    requests.append(
        glad_item_request(tmp_path / "2020" / "60N_000E.tif", tmp_path, request_id="bad-1")
    )
    # WHEN they are posted, and the workers of serve process them
    response = served.post(requests)
    assert response.status_code == 202, response.text
    ids = response.json()["request_ids"]
    assert ids == ["glad-collection", *[f"tile-{n}" for n in range(8)], "bad-1"]
    rows = served.settled(ids)
    # THEN each tile is loaded with its item, and the bad one is dead-lettered with its reason
    for n, tif in enumerate(tifs):
        assert rows[f"tile-{n}"]["state"] == "loaded"
        assert rows[f"tile-{n}"]["items"] == [
            {"collection": GLAD_COLLECTION, "id": f"2020_{tif.stem}"}
        ]
    assert rows["bad-1"]["state"] == "dead_lettered"
    assert "60N_000E.tif" in rows["bad-1"]["error"]
    # AND the listing pages through all ten, newest first
    seen, url = [], "/ingest/requests?limit=3"
    while url:
        page = served.http.get(url).json()
        seen += [r["request_id"] for r in page["requests"]]
        url = page["next"]
    assert sorted(seen) == sorted(ids)
    failed = served.http.get("/ingest/requests?state=dead_lettered").json()["requests"]
    assert [r["request_id"] for r in failed] == ["bad-1"]
    # AND the status page, in a real browser, shows the counts, the failure and the items
    dom = chromium(served.base + "/ingest/", ARTIFACTS / "status-page.png")
    assert "60N_000E.tif" in dom and "dead_lettered" in dom
    assert f"/collections/{GLAD_COLLECTION}/items/2020_{tifs[0].stem}" in dom
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000
    # AND an item link from the page resolves on the STAC API
    link = served.http.get(f"/collections/{GLAD_COLLECTION}/items/2020_{tifs[0].stem}")
    assert link.status_code == 200 and link.json()["id"] == f"2020_{tifs[0].stem}"


def test_a_dead_letter_is_redriven_from_the_page(served, tmp_path):
    # GIVEN an item whose collection does not exist: dead-lettered after its receives
    response = served.post(item("orphan", "later"))
    [rid] = response.json()["request_ids"]
    assert served.settled([rid], timeout=120)[rid]["state"] == "dead_lettered"
    # WHEN its collection arrives, and the page's redrive button is pressed
    assert served.post(collection("later")).status_code == 202
    pressed = served.http.post(
        f"/ingest/redrive/{rid}", headers={"accept": "text/html"}, follow_redirects=False
    )
    assert pressed.status_code == 303 and pressed.headers["location"].endswith("/ingest/")
    # THEN it loads, and the ledger says so
    assert served.settled([rid])[rid]["state"] == "loaded"
    assert served.http.post(f"/ingest/redrive/{rid}").status_code == 404  # nothing dead now


def test_odd_request_ids_are_linked_and_answered(served, tmp_path):
    odd = "a b/c?d#e%f\u00e9"
    request = glad_item_request(tmp_path / "2020" / "60N_000E.tif", tmp_path, request_id=odd)
    response = served.post(request)
    assert response.status_code == 202 and response.json()["request_ids"] == [odd]
    [link] = response.json()["links"]
    assert served.http.get(link["href"]).json()["request_id"] == odd
    # a body over 32 MiB is refused as it arrives, declared or streamed
    assert served.post(b"[" + b" " * (33 * 1024 * 1024) + b"]").status_code == 413

    # a client that keeps sending is answered once 32 MiB are in, while it still sends
    status, sent = post_endlessly(served.base, "/ingest/requests")
    assert status == 413 and sent < 64 * 1024 * 1024
    # more objects than one post takes: the local command for files of any size is named
    many = served.post([{"type": "Feature"}] * 10_001)
    assert many.status_code == 400 and "stactools-ingest run FILE" in many.json()["detail"]
    # NUL in an id or a filter is an answer, never a server error
    assert served.http.get("/ingest/requests/a%00b").status_code == 404
    assert served.http.get("/ingest/requests", params={"collection": "a\x00"}).status_code == 422
    assert served.http.get("/ingest/counts", params={"submission": "a\x00"}).status_code == 422
    assert served.http.post("/ingest/redrive/a%00b").status_code == 404


def test_other_sites_cannot_queue_or_redrive_through_a_browser(served):
    # serve runs any stactools package a request names: a page on another site must not be
    # able to make the user's browser post one (a "simple" request needs no CORS preflight)
    request = {"package_name": "stactools-evil==6.6.6", "group_name": "evil"}
    forged = served.http.post(
        "/ingest/requests", content=json.dumps(request), headers={"content-type": "text/plain"}
    )
    assert forged.status_code == 415 and "application/json" in forged.json()["detail"]
    # nor with JSON from its own origin (stac-fastapi's CORS allows every origin)
    foreign = served.post(request, origin="https://evil.example")
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["detail"]
    # nor by DNS rebinding, where the browser believes evil.example is this server
    port = served.base.rsplit(":", 1)[1]
    rebound = served.post(
        request, host=f"evil.example:{port}", origin=f"http://evil.example:{port}"
    )
    assert rebound.status_code == 403
    # nor press the page's redrive button from elsewhere
    redrive = served.http.post(
        "/ingest/redrive/x", headers={"origin": "https://evil.example", "accept": "text/html"}
    )
    assert redrive.status_code == 403
    # and a rebound page cannot read the ledger either; a Host that is no name is 400
    assert served.http.get("/ingest/requests", headers={"host": "evil.example"}).status_code == 403
    assert served.http.get("/ingest/", headers={"host": "[::1"}).status_code == 400
    assert served.http.get("/ingest/requests").json()["requests"] == []
    # while this server's own page and non-browser clients are served
    own = served.post(collection("own"), origin=served.base)
    assert own.status_code == 202
    local = served.post(
        collection("local"), host=f"LOCALHOST:{port}", origin=f"http://localhost:{port}"
    )
    assert local.status_code == 202


def post_endlessly(base: str, path: str, give_up: int = 256 * 1024 * 1024) -> tuple[int, int]:
    """POST a chunked JSON body that goes on (up to ``give_up`` bytes) until the server
    answers; the answer's status and how many bytes had been sent by then."""
    import select

    host, port = base.removeprefix("http://").rsplit(":", 1)
    chunk = b" " * (1024 * 1024)
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        while sent < give_up and not select.select([conn], [], [], 0)[0]:
            try:
                conn.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break  # it answered and hung up between the look and the send
            sent += len(chunk)
        if sent >= give_up:
            conn.sendall(b"0\r\n\r\n")
        answer = conn.recv(4096)
    return int(answer.split(b" ", 2)[1]), sent


def chromium(url: str, screenshot: Path) -> str:
    """The page's DOM as headless chromium rendered it, and a screenshot of it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is not installed (.ci/run installs it)"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    subprocess.run(
        [binary, *flags, f"--screenshot={screenshot}", "--window-size=1280,1400", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [binary, *flags, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    )
    return dom.stdout
