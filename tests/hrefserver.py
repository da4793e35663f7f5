"""A local HTTP server for href tests: documents, tricksters (slow, endless) and redirects.

Binds 127.0.0.1 only; nothing a test fetches leaves the machine.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from factories import item

SECRET_DOC = {"aws_secret_access_key_name": "s3cr3t-value", "Token": "t0ken"}


class HrefHandler(BaseHTTPRequestHandler):
    """Routes by path: the documents, the tricksters and the redirects of these tests."""

    protocol_version = "HTTP/1.0"
    barrier: threading.Barrier | None = None  # /barrier answers 200 only to concurrent requests
    hits: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        self.hits.append(path)
        try:
            if path.startswith("/barrier/"):
                try:
                    self.barrier.wait()
                except threading.BrokenBarrierError:
                    self._send(503)
                else:
                    name = path.rsplit("/", 1)[1].removesuffix(".json")
                    self._send(200, json.dumps(item(name)).encode())
            elif path == "/item.json":
                self._send(200, json.dumps(item("served")).encode())
            elif path == "/secret.json":
                self._send(200, json.dumps(SECRET_DOC).encode())
            elif path == "/slow-body":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(100000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            elif path == "/slow-headers":
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                for _ in range(100000):
                    self.wfile.write(b"X-Drip: 1\r\n")
                    self.wfile.flush()
                    time.sleep(0.2)
            elif path == "/endless":
                self.send_response(200)
                self.end_headers()  # no length: the body ends when the connection does
                block = b" " * 65536
                while True:
                    self.wfile.write(block)
            elif path == "/big-declared":
                self.send_response(200)
                self.send_header("Content-Length", str(10 * 1024 * 1024))
                self.end_headers()
            elif path == "/redirect":
                self._send(302, Location=query.removeprefix("to="))
            elif path == "/loop":
                self._send(302, Location="/loop")
            elif path == "/busy":
                self._send(503)
            else:
                self._send(404)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def serving(handler: Callable[..., BaseHTTPRequestHandler] = HrefHandler) -> Iterator[str]:
    """Run a server in a thread (these tests' ``HrefHandler`` unless given another handler);
    yields its base URL (http://127.0.0.1:PORT)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
