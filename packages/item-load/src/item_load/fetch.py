"""Read what an href points at, and only what the href policy allows.

A load-topic message can name any href, so ItemLoad treats every href as hostile: only the
schemes in ``HREF_SCHEMES`` are read (a bare path is ``file``); http(s) hosts are resolved
once, every address is checked (no loopback, link-local, private, unspecified, multicast or
reserved address unless ``HREF_ALLOW_PRIVATE_HOSTS``), and the connection goes to the address
that was checked, so DNS rebinding cannot swap it; redirects obey the same rules. Every read
is bounded by a byte cap and a total-time cap; a watchdog closes the socket at the deadline,
so a server that trickles headers or body one byte at a time cannot hold the invocation.
Reasons name the href without its query (a presigned URL's signature stays out of logs) and
never echo what was read.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from item_load.errors import FetchError, FetchUnavailable, HrefRefused
from item_load.settings import LoadSettings

CHUNK = 1024 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_SHOWN = 300
# S3 error codes that say "try again later"; everything else the service answers is final.
S3_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class HrefPolicy:
    """What one href may make this process read: schemes, hosts, bytes and seconds."""

    schemes: frozenset[str] = frozenset({"s3", "https"})
    max_bytes: int = 256 * 1024 * 1024
    timeout_seconds: float = 60.0
    allow_private_hosts: bool = False
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings: LoadSettings) -> HrefPolicy:
        """The Lambda's policy: exactly what the settings say."""
        return cls(
            schemes=frozenset(settings.href_schemes),
            max_bytes=settings.href_max_bytes,
            timeout_seconds=settings.href_timeout_seconds,
            allow_private_hosts=settings.href_allow_private_hosts,
        )

    @classmethod
    def for_local_run(cls, settings: LoadSettings) -> HrefPolicy:
        """``stactools-ingest run``: the settings plus ``file``, and local servers allowed.

        The person running it owns the machine and the files, so reading them (or a server on
        localhost or the LAN) is the point rather than a leak.
        """
        policy = cls.from_settings(settings)
        return cls(
            schemes=policy.schemes | {"file"},
            max_bytes=policy.max_bytes,
            timeout_seconds=policy.timeout_seconds,
            allow_private_hosts=True,
        )


@cache
def local_fetcher() -> HrefFetcher:
    """The fetcher of ``stactools-ingest run``, built once from the environment's settings."""
    return HrefFetcher(HrefPolicy.for_local_run(LoadSettings()))


def shown(href: str) -> str:
    """The href as reasons may name it: no user info, query or fragment, and not too long."""
    try:
        parts = urlsplit(href)
        netloc = parts.netloc.rpartition("@")[2]
        text = f"//{netloc}{parts.path}" if netloc or parts.scheme else parts.path
        text = f"{parts.scheme}:{text}" if parts.scheme else text
        if parts.query:
            text += "?…"
    except ValueError:
        text = href.split("?", 1)[0].split("#", 1)[0]
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


def non_public_kind(ip: IpAddress) -> str | None:
    """Why an address must not be reached from a Lambda, or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            kind = non_public_kind(embedded)
            if kind:
                return f"{kind} (embedded in IPv6)"
    for kind in ("loopback", "link_local", "unspecified", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


class _Deadline:
    """The total-time budget of one href, shared by its redirects."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.fired = False

    def remaining(self) -> float:
        return self.end - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.fired or self.remaining() <= 0


@dataclass
class HrefFetcher:
    """Reads hrefs under one policy; thread-safe, so one batch's hrefs can be read in parallel."""

    policy: HrefPolicy = field(default_factory=HrefPolicy)
    s3_client_factory: Callable[[], Any] | None = None
    _s3: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __call__(self, href: str) -> bytes:
        """The bytes ``href`` points at, or a FetchError / FetchUnavailable saying why not."""
        name = shown(href)
        if not href.strip():
            raise FetchError("the href is empty; nothing was read")
        try:
            parts = urlsplit(href)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as e:
            raise FetchError(f"{name}: malformed href ({e}); nothing was read") from None
        scheme = parts.scheme or "file"
        self._check_scheme(scheme, name)
        deadline = _Deadline(self.policy.timeout_seconds)
        if scheme == "file":
            return self._read_file(parts.netloc, parts.path, name, deadline)
        if scheme == "s3":
            return self._read_s3(parts.netloc, parts.path.lstrip("/"), name, deadline)
        return self._read_http(href, name, deadline)

    # -- policy checks ------------------------------------------------------------------------

    def _check_scheme(self, scheme: str, name: str) -> None:
        if scheme not in self.policy.schemes:
            allowed = ",".join(sorted(self.policy.schemes)) or "nothing"
            raise HrefRefused(
                f"{name}: scheme {scheme!r} is not allowed (HREF_SCHEMES={allowed}); "
                "nothing was read"
            )

    def _too_big(self, name: str) -> HrefRefused:
        return HrefRefused(
            f"{name}: larger than the byte cap of {self.policy.max_bytes} bytes "
            "(HREF_MAX_BYTES); split it into smaller files"
        )

    def _too_slow(self, name: str, transient: bool = False) -> HrefRefused | FetchUnavailable:
        limit = f"{name}: not read within {self.policy.timeout_seconds:g} s (HREF_TIMEOUT_SECONDS)"
        if transient:  # S3 is not slow on purpose: a stalled connection is worth another try
            return FetchUnavailable(f"{limit}; will retry")
        return HrefRefused(f"{limit}; serve it faster or split it")

    def _vet_host(self, host: str, port: int, name: str) -> list[tuple[Any, ...]]:
        """Resolve once and check every address; the caller connects only to these."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            if e.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
                raise FetchUnavailable(
                    f"{name}: could not resolve {host!r:.80} ({e}); will retry"
                ) from e
            raise FetchError(f"{name}: host {host!r:.80} does not resolve ({e})") from None
        except UnicodeError:
            raise FetchError(f"{name}: host name is not valid; nothing was read") from None
        if not self.policy.allow_private_hosts:
            for info in infos:
                ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                kind = non_public_kind(ip)
                if kind:
                    raise HrefRefused(
                        f"{name}: host {host!r:.80} resolves to {ip}, a {kind} address, which "
                        "hrefs may not reach (HREF_ALLOW_PRIVATE_HOSTS=false); nothing was read"
                    )
        return infos

    # -- file ---------------------------------------------------------------------------------

    def _read_file(self, netloc: str, path: str, name: str, deadline: _Deadline) -> bytes:
        if netloc not in ("", "localhost"):
            raise HrefRefused(f"{name}: file hrefs must name a local path; nothing was read")
        path = unquote(path)
        try:
            # stat first: a FIFO or device is refused without being opened at all.
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise HrefRefused(f"{name}: not a regular file; nothing was read")
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise FetchError(f"{name}: no such file") from None
        except PermissionError:
            raise FetchError(f"{name}: permission denied") from None
        except (OSError, ValueError) as e:  # ValueError: NUL in the path
            raise FetchError(f"{name}: cannot open ({type(e).__name__})") from None
        try:
            st = os.fstat(fd)  # the path may have been swapped between stat and open
            if not stat.S_ISREG(st.st_mode):
                raise HrefRefused(f"{name}: not a regular file; nothing was read")
            if st.st_size > self.policy.max_bytes:
                raise self._too_big(name)
            return self._bounded(_os_chunks(fd), name, deadline)
        except OSError as e:
            raise FetchError(f"{name}: read failed ({type(e).__name__})") from None
        finally:
            os.close(fd)

    # -- s3 -----------------------------------------------------------------------------------

    def _s3_client(self) -> Any:
        with self._lock:
            if self._s3 is None:
                self._s3 = (self.s3_client_factory or self._default_s3_client)()
            return self._s3

    def _default_s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        timeout = self.policy.timeout_seconds
        return boto3.client(
            "s3",
            config=Config(
                connect_timeout=min(10.0, timeout),
                read_timeout=timeout,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=32,
            ),
        )

    def _read_s3(self, bucket: str, key: str, name: str, deadline: _Deadline) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        if not bucket or not key:
            raise FetchError(f"{name}: an s3 href needs a bucket and a key")
        try:
            obj = self._s3_client().get_object(Bucket=bucket, Key=key)
            body = obj["Body"]
            try:
                if int(obj.get("ContentLength") or 0) > self.policy.max_bytes:
                    raise self._too_big(name)
                chunks = iter(lambda: body.read(CHUNK), b"")
                return self._bounded(chunks, name, deadline, transient=True)
            finally:
                body.close()
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in S3_TRANSIENT_CODES or status >= 500 or status == 429:
                raise FetchUnavailable(f"{name}: S3 answered {code or status}; will retry") from e
            raise FetchError(f"{name}: S3 answered {code or status}") from None
        except BotoCoreError as e:
            # Connection trouble, read timeouts, truncated bodies: S3's side, not the message's.
            raise FetchUnavailable(f"{name}: {type(e).__name__} reading from S3; will retry") from e

    # -- http(s) ------------------------------------------------------------------------------

    def _read_http(self, href: str, name: str, deadline: _Deadline) -> bytes:
        url = href
        for _ in range(self.policy.max_redirects + 1):
            parts = urlsplit(url)
            scheme = parts.scheme
            if scheme not in ("http", "https"):
                raise HrefRefused(f"{name}: redirected to a {scheme!r} href; nothing was read")
            label = name if url == href else f"{name} redirected to {shown(url)}"
            self._check_scheme(scheme, label)
            host = parts.hostname
            if not host:
                raise FetchError(f"{label}: no host; nothing was read")
            try:
                port = parts.port or (443 if scheme == "https" else 80)
            except ValueError as e:
                raise FetchError(f"{label}: malformed href ({e}); nothing was read") from None
            infos = self._vet_host(host, port, label)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            status, location, body = self._get(scheme, host, port, infos, target, label, deadline)
            if status in REDIRECTS:
                if not location:
                    raise FetchError(f"{label}: HTTP {status} without a Location")
                try:
                    url = urljoin(url, location)
                    urlsplit(url).port  # noqa: B018 - raises ValueError for a bad port
                except ValueError as e:
                    raise FetchError(
                        f"{name}: redirected to a malformed href ({e}); nothing was read"
                    ) from None
                continue
            if status == 200:
                return body
            if status == 429 or status >= 500:
                raise FetchUnavailable(f"{label}: HTTP {status}; will retry")
            raise FetchError(f"{label}: HTTP {status}")
        raise HrefRefused(f"{name}: more than {self.policy.max_redirects} redirects")

    def _get(
        self,
        scheme: str,
        host: str,
        port: int,
        infos: list[tuple[Any, ...]],
        target: str,
        label: str,
        deadline: _Deadline,
    ) -> tuple[int, str | None, bytes]:
        """One GET to a vetted address; the body only for a 200, the Location for a redirect."""
        with _watchdog(deadline) as arm:
            sock = self._connect(infos, label, deadline)
            arm(sock)
            try:
                if scheme == "https":
                    context = ssl.create_default_context()
                    sock = context.wrap_socket(sock, server_hostname=host)
                    arm(sock)
                    conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                        host, port, context=context
                    )
                else:
                    conn = http.client.HTTPConnection(host, port)
                conn.sock = sock  # connect() is skipped: the request goes to the vetted address
                conn.request(
                    "GET",
                    target,
                    headers={
                        "Accept": "application/geo+json, application/json, */*",
                        "Accept-Encoding": "identity",
                        "User-Agent": "stactools-ingest",
                    },
                )
                resp = conn.getresponse()
                if resp.status in REDIRECTS:
                    return resp.status, resp.getheader("Location"), b""
                if resp.status != 200:
                    return resp.status, None, b""
                length = resp.getheader("Content-Length")
                if length and length.isdigit() and int(length) > self.policy.max_bytes:
                    raise self._too_big(label)
                return 200, None, self._bounded(_http_chunks(resp), label, deadline)
            except (OSError, http.client.HTTPException) as e:
                if deadline.passed:
                    raise self._too_slow(label) from None
                if isinstance(e, ssl.SSLCertVerificationError):
                    raise FetchError(
                        f"{label}: TLS certificate not valid for {host!r:.80}"
                    ) from None
                raise FetchUnavailable(f"{label}: {type(e).__name__} while reading") from e
            finally:
                with suppress(OSError):
                    sock.close()

    def _connect(
        self, infos: list[tuple[Any, ...]], label: str, deadline: _Deadline
    ) -> socket.socket:
        last: OSError | None = None
        for family, kind, proto, _, address in infos:
            if deadline.passed:
                raise self._too_slow(label)
            sock = socket.socket(family, kind, proto)
            sock.settimeout(max(deadline.remaining(), 0.001))
            try:
                sock.connect(address)
                return sock
            except OSError as e:
                sock.close()
                last = e
        if deadline.passed:
            raise self._too_slow(label)
        raise FetchUnavailable(f"{label}: could not connect ({type(last).__name__}); will retry")

    # -- shared -------------------------------------------------------------------------------

    def _bounded(
        self, chunks: Iterator[bytes], name: str, deadline: _Deadline, transient: bool = False
    ) -> bytes:
        """Join chunks, stopping at the byte cap or the deadline, whichever comes first."""
        data = bytearray()
        for chunk in chunks:
            data += chunk
            if len(data) > self.policy.max_bytes:
                raise self._too_big(name)
            if deadline.passed:
                raise self._too_slow(name, transient)
        if deadline.passed:  # the watchdog's shutdown looks like an early end of the stream
            raise self._too_slow(name, transient)
        return bytes(data)


def _os_chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, CHUNK):
        yield chunk


def _http_chunks(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    # read1 returns what one recv brought (chunked or not); read(n) would wait for all n bytes.
    while chunk := resp.read1(CHUNK):
        yield chunk


@contextmanager
def _watchdog(deadline: _Deadline) -> Iterator[Callable[[socket.socket], None]]:
    """Shut the current socket down at the deadline, whatever call is blocked on it.

    A socket timeout bounds one recv; a server that sends one byte per recv (in the status line,
    the headers or the body) would pass every timeout and never finish.
    """
    current: list[socket.socket] = []

    def fire() -> None:
        deadline.fired = True
        for sock in current[-1:]:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(deadline.remaining(), 0.0), fire)
    timer.daemon = True
    timer.start()

    def arm(sock: socket.socket) -> None:
        current.append(sock)
        sock.settimeout(max(deadline.remaining(), 0.001))
        if deadline.passed:
            fire()

    try:
        yield arm
    finally:
        timer.cancel()
