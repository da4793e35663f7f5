"""Walk a static STAC catalog and yield what pgstac should hold: collections, then their items.

A static catalog (pystac's ``normalize_hrefs`` + ``save``, stactools' ``create-catalog``, a
bucket of JSON) is a tree of Catalogs and Collections linked by ``child`` links, with ``item``
links to Items. The walk is depth first and in link order, so it is the same on every run over
the same catalog: each document is a row keyed by its href, so a checkpoint can skip rows it
settled without reading them, and notice when the catalog changed before that point. Item
documents are read in parallel, a bounded window ahead, and yielded in link order.

What is yielded is ready to load, wherever the catalog lives:

- relative asset and link hrefs are made absolute against the document's own location (a local
  catalog's become absolute paths, a remote one's URLs, percent-encoded where needed);
- the links that describe the static tree (self, root, parent, child, item, collection) are
  dropped: they point into the static copy, and the STAC API serving pgstac supplies its own;
- an item without ``collection`` takes the id of the nearest Collection above it.

A document that cannot be read or is not STAC is an ``InputProblem`` naming its href and the
link that led to it; the walk goes on with the rest. A remote catalog (http, https, s3) may not
lead the walk to local files: such a link is a problem too, never read.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import orjson

from ingest_common.errors import IngestError
from item_load.fetch import shown
from stactools_ingest.checkpoint import Row
from stactools_ingest.inputs import InputProblem, InputRecord

TREE_RELS = frozenset({"self", "root", "parent", "child", "item", "collection"})
"""Links of the static tree: meaningless once the documents are in pgstac."""
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_URL_SAFE = "/%:@!$&'()*+,;=-._~"
"""Characters left as they are when a path goes into an http(s) URL (``%`` keeps escapes)."""
T = TypeVar("T")
R = TypeVar("R")


class CrawlError(IngestError):
    """The root of the catalog cannot be read or is not a STAC Catalog or Collection."""

    exit_code = 2


def _scheme(href: str) -> str:
    """The href's scheme, lower case ('' for a path; a drive letter is no scheme)."""
    match = _SCHEME.match(href)
    return match.group(1).lower() if match else ""


def is_local(href: str) -> bool:
    """Whether an href names a local file (a path, or a file: URL)."""
    return _scheme(href) in ("", "file")


def root_href(source: str) -> str:
    """The root's href: URLs as given, a local path absolute and normalized (links resolve
    against it). A local directory stands for the ``catalog.json`` (else ``collection.json``)
    in it."""
    if not is_local(source):
        return source
    path = unquote(urlsplit(source).path) if _scheme(source) == "file" else source
    absolute = Path(os.path.abspath(path))
    if absolute.is_dir():
        for name in ("catalog.json", "collection.json"):
            if (absolute / name).is_file():
                return str(absolute / name)
        raise CrawlError(f"{absolute}: a directory without a catalog.json or collection.json")
    return str(absolute)


def resolve(base: str, href: str) -> str:
    """``href`` as an absolute href, relative to the document at ``base``; ValueError when it
    cannot be one (a malformed URL)."""
    scheme = _scheme(href)
    if scheme == "file":
        return unquote(urlsplit(href).path)
    if scheme:
        return _encoded(href) if scheme in ("http", "https") else href
    if is_local(base):
        return posixpath.normpath(posixpath.join(posixpath.dirname(base), href))
    parts = urlsplit(base)
    # urljoin resolves relative references only for the schemes it knows (not s3): join as
    # https, then put the scheme back.
    joined = urljoin(urlunsplit(("https", parts.netloc, parts.path, "", "")), href)
    target = parts.scheme + joined[len("https") :]
    return _encoded(target) if parts.scheme in ("http", "https") else target


def _encoded(url: str) -> str:
    """An http(s) URL with spaces and non-ASCII characters of its path percent-encoded, as
    pystac writes relative hrefs unencoded (``./my item.json``)."""
    parts = urlsplit(url)
    parts.port  # noqa: B018 - ValueError for a port that is not a number
    return urlunsplit(parts._replace(path=quote(parts.path, safe=_URL_SAFE)))


def ordered_map(
    fn: Callable[[T], R], args: Iterable[T], pool: ThreadPoolExecutor, window: int
) -> Iterator[R]:
    """``fn`` over ``args`` in the pool, at most ``window`` ahead, results in ``args``' order.

    Closed early, it cancels what has not started instead of waiting for the whole window.
    """
    pending: deque[Future[R]] = deque()
    try:
        for arg in args:
            pending.append(pool.submit(fn, arg))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


@dataclass
class CrawlCounts:
    """What a walk found, for progress and the summary."""

    catalogs: int = 0
    collections: int = 0
    items: int = 0
    problems: int = 0
    skipped: int = 0


@dataclass
class Crawler:
    """Walks one static catalog through ``fetch`` (an href's bytes, or an exception saying why).

    ``load_catalogs``: also yield the Catalog documents (pgstac keeps them beside collections,
    for stac-fastapi-pgstac's multi-tenant catalogs); by default they are only walked.
    """

    fetch: Callable[[str], bytes]
    workers: int = 8
    load_catalogs: bool = False
    counts: CrawlCounts = field(default_factory=CrawlCounts)

    def open(self, source: str) -> Walk:
        """The catalog at ``source``, its root read now: CrawlError when the root is unusable,
        before anything else happens."""
        root = root_href(source)
        try:
            doc = self._node(root)
        except _Unusable as e:
            raise CrawlError(f"{shown(root)}: {e}") from None
        return Walk(self, root, doc)

    def rows_of(self, root: str, doc: dict[str, Any], skip: int) -> Iterator[Row]:
        """The rows of the catalog whose root ``doc`` was read from ``root`` (see ``Walk``)."""
        # the walk's stack: (href or bad link, document if already read, collection above,
        # the link's holder for reasons)
        stack: list[tuple[str | _BadLink, dict[str, Any] | None, str | None, str]] = [
            (root, doc, None, "")
        ]
        seen = {root}
        stored: dict[str, str] = {}  # ids of the collections (and catalogs) yielded: their href
        # Catalogs to load come last: a Catalog must never take the id of a Collection, wherever
        # in the tree the two are.
        catalogs: list[tuple[str, dict[str, Any]]] = []
        remote = not is_local(root)
        row = 0
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="crawl")
        try:
            while stack:
                href, doc, collection, via = stack.pop()
                if isinstance(href, _BadLink):  # a child link that names nothing readable
                    row += 1
                    if row > skip:
                        self.counts.problems += 1
                    problem = InputProblem(shown(href.key), f"{href.reason}{via}")
                    yield Row(href.key, problem if row > skip else None)
                    continue
                if doc is None:
                    try:
                        doc = self._node(href)
                    except _Unusable as e:
                        row += 1
                        if row > skip:
                            self.counts.problems += 1
                        problem = InputProblem(shown(href), f"{e}{via}")
                        yield Row(href, problem if row > skip else None)
                        continue
                kind = doc["type"]
                if kind == "Collection":
                    collection = doc["id"]
                    self.counts.collections += 1
                else:
                    self.counts.catalogs += 1
                links = [ln for ln in doc.get("links", []) if isinstance(ln, dict)]
                if kind == "Collection":
                    row += 1
                    yield Row(href, self._stored(doc, href, stored, row > skip))
                elif self.load_catalogs:
                    catalogs.append((href, doc))
                items = _linked(links, "item", href, seen, remote)
                item_via = f" (item of {shown(href)})"
                done = min(len(items), max(0, skip - row))
                for target in items[:done]:  # a resume: submitted before, not read again
                    row += 1
                    self.counts.skipped += 1
                    yield Row(_key(target), None)
                todo = items[done:]
                for target, record in zip(
                    todo,
                    ordered_map(
                        lambda t, c=collection, v=item_via: self._item(t, c, v),
                        todo,
                        pool,
                        self.workers * 4,
                    ),
                    strict=True,
                ):
                    row += 1
                    if isinstance(record, InputProblem):
                        self.counts.problems += 1
                    else:
                        self.counts.items += 1
                    yield Row(_key(target), record)
                child_via = f" (child of {shown(href)})"
                children = _linked(links, "child", href, seen, remote)
                stack.extend((child, None, collection, child_via) for child in reversed(children))
            for href, doc in catalogs:
                row += 1
                yield Row(href, self._stored(doc, href, stored, row > skip))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _stored(
        self, doc: dict[str, Any], href: str, stored: dict[str, str], wanted: bool
    ) -> InputRecord | InputProblem | None:
        """A collection or catalog to load, or why not: its id is taken by an earlier one.

        Every id is noted, wanted or not (a resume skips the row), so both runs agree.
        """
        first = stored.setdefault(doc["id"], href)
        if not wanted:
            return None
        if first == href:
            return InputRecord(shown(href), _ready(doc, href))
        self.counts.problems += 1
        return InputProblem(
            shown(href),
            f"a {doc['type']} with the id {doc['id']!r} of {shown(first)}; not loaded "
            "(pgstac keeps one collection per id)",
        )

    # -- documents ----------------------------------------------------------------------------

    def _read(self, href: str) -> Any:
        try:
            data = self.fetch(Path(href).as_uri() if _scheme(href) == "" else href)
        except Exception as e:
            reason = str(e).removeprefix(f"{shown(href)}: ")
            # the crawl reads each document once: the fetcher's "will retry" is not ours
            raise _Unusable(reason.removesuffix("; will retry")) from None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise _Unusable(f"not valid JSON ({e})") from None

    def _node(self, href: str) -> dict[str, Any]:
        doc = self._read(href)
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind not in ("Catalog", "Collection"):
            what = f"type={kind!r:.40}" if isinstance(kind, str) else "no type"
            raise _Unusable(f"not a STAC Catalog or Collection ({what})")
        if not isinstance(doc.get("id"), str) or not doc["id"]:
            raise _Unusable(f"a {kind} without an id")
        if not isinstance(doc.get("links", []), list):
            raise _Unusable(f"a {kind} whose links are not a list")
        return doc

    def _item(
        self, target: str | _BadLink, collection: str | None, via: str
    ) -> InputRecord | InputProblem:
        """One item, ready to load, or why not (runs in the pool: it touches no counts)."""
        if isinstance(target, _BadLink):
            return InputProblem(shown(target.key), f"{target.reason}{via}")
        try:
            doc = self._read(target)
        except _Unusable as e:
            return InputProblem(shown(target), f"{e}{via}")
        if not isinstance(doc, dict) or doc.get("type") != "Feature":
            kind = doc.get("type") if isinstance(doc, dict) else None
            what = f"type={kind!r:.40}" if isinstance(kind, str) else "no type"
            return InputProblem(shown(target), f"not a STAC Item ({what}){via}")
        if not doc.get("collection"):
            if collection is None:
                return InputProblem(
                    shown(target),
                    f"item has no 'collection' and no Collection above it in the catalog{via}",
                )
            doc["collection"] = collection
        return InputRecord(shown(target), _ready(doc, target))


@dataclass(frozen=True)
class Walk:
    """One catalog whose root was read: walk it as often as needed without reading it again."""

    crawler: Crawler
    root: str
    doc: dict[str, Any]

    def rows(self, skip: int = 0) -> Iterator[Row]:
        """Every row of the catalog in walk order, keyed by href; the first ``skip`` without
        their records (their items are not read)."""
        return self.crawler.rows_of(self.root, self.doc, skip)

    def records(self) -> Iterator[InputRecord | InputProblem]:
        """Every record of the catalog, in walk order."""
        return (row.record for row in self.rows() if row.record is not None)


class _Unusable(Exception):
    """One document of the catalog cannot be used (the reason names no href: callers add it)."""


@dataclass(frozen=True, slots=True)
class _BadLink:
    """A link that names nothing the walk may read: malformed, or local in a remote catalog."""

    key: str
    reason: str


def _key(target: str | _BadLink) -> str:
    return target.key if isinstance(target, _BadLink) else target


def _linked(
    links: list[dict[str, Any]], rel: str, base: str, seen: set[str], remote: bool
) -> list[str | _BadLink]:
    """The absolute hrefs of ``rel`` links not walked yet (a catalog may link one twice), or
    what is wrong with a link: malformed, or local when the catalog is remote."""
    found: list[str | _BadLink] = []
    for link in links:
        href = link.get("href")
        if link.get("rel") != rel or not isinstance(href, str) or not href.strip():
            continue
        try:
            target = resolve(base, href)
        except ValueError as e:
            found.append(_BadLink(href, f"a malformed {rel} link ({e})"))
            continue
        if target in seen:
            continue
        seen.add(target)
        if remote and is_local(target):
            found.append(_BadLink(target, "a remote catalog may not link to local files"))
            continue
        found.append(target)
    return found


def _ready(doc: dict[str, Any], location: str) -> dict[str, Any]:
    """A copy of the document with absolute hrefs and without the static tree's links (see
    module doc); the document itself is left as read (a walk may read its links again).

    An href that cannot be made absolute (malformed) is kept as written."""

    def absolute(href: str) -> str:
        try:
            return resolve(location, href)
        except ValueError:
            return href

    ready = dict(doc)
    links = doc.get("links")
    if isinstance(links, list):
        ready["links"] = [
            {**ln, "href": absolute(ln["href"])} if isinstance(ln.get("href"), str) else ln
            for ln in links
            if isinstance(ln, dict) and ln.get("rel") not in TREE_RELS
        ]
    assets = doc.get("assets")
    if isinstance(assets, dict):
        ready["assets"] = {
            key: {**asset, "href": absolute(asset["href"])}
            if isinstance(asset, dict) and isinstance(asset.get("href"), str)
            else asset
            for key, asset in assets.items()
        }
    return ready
