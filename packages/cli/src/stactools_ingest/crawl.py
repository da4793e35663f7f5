"""Walk a static STAC catalog and yield what pgstac should hold: collections, then their items.

A static catalog (pystac's ``normalize_hrefs`` + ``save``, stactools' ``create-catalog``, a
bucket of JSON) is a tree of Catalogs and Collections linked by ``child`` links, with ``item``
links to Items. The walk is depth first and in link order, so it is the same on every run over
the same catalog: a checkpoint can count records and a rerun skip that many without reading
them. Item documents are read in parallel, a bounded window ahead, and yielded in link order.

What is yielded is ready to load, wherever the catalog lives:

- relative asset and link hrefs are made absolute against the document's own location (a local
  catalog's become absolute paths, a remote one's URLs);
- the links that describe the static tree (self, root, parent, child, item, collection) are
  dropped: they point into the static copy, and the STAC API serving pgstac supplies its own;
- an item without ``collection`` takes the id of the nearest Collection above it.

A document that cannot be read or is not STAC is an ``InputProblem`` naming its href and the
link that led to it; the walk goes on with the rest.
"""

from __future__ import annotations

import posixpath
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import orjson

from ingest_common.errors import IngestError
from item_load.fetch import shown
from stactools_ingest.inputs import InputProblem, InputRecord

TREE_RELS = frozenset({"self", "root", "parent", "child", "item", "collection"})
"""Links of the static tree: meaningless once the documents are in pgstac."""
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
T = TypeVar("T")
R = TypeVar("R")


class CrawlError(IngestError):
    """The root of the catalog cannot be read or is not a STAC Catalog or Collection."""

    exit_code = 2


def root_href(source: str) -> str:
    """The root's href: URLs as given, a local path made absolute (links resolve against it).

    A local directory stands for the ``catalog.json`` (else ``collection.json``) in it.
    """
    parts = urlsplit(source)
    if parts.scheme and len(parts.scheme) > 1 and parts.scheme != "file":  # not C:\
        return source
    path = Path(unquote(parts.path) if parts.scheme == "file" else source).absolute()
    if path.is_dir():
        for name in ("catalog.json", "collection.json"):
            if (path / name).is_file():
                return str(path / name)
    return str(path)


def resolve(base: str, href: str) -> str:
    """``href`` as an absolute href, relative to the document at ``base``."""
    if _SCHEME.match(href) and not href.startswith("file:"):
        return href
    if href.startswith("file:"):
        return unquote(urlsplit(href).path)
    parts = urlsplit(base)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path
        return posixpath.normpath(posixpath.join(posixpath.dirname(base), href))
    # urljoin resolves relative references only for the schemes it knows (not s3): join as
    # https, then put the scheme back.
    joined = urljoin(urlunsplit(("https", parts.netloc, parts.path, "", "")), href)
    return parts.scheme + joined[len("https") :]


def ordered_map(
    fn: Callable[[T], R], args: Iterable[T], pool: ThreadPoolExecutor, window: int
) -> Iterator[R]:
    """``fn`` over ``args`` in the pool, at most ``window`` ahead, results in ``args``' order."""
    pending: deque[Future[R]] = deque()
    for arg in args:
        pending.append(pool.submit(fn, arg))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


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

    def records(self, source: str, skip: int = 0) -> Iterator[InputRecord | InputProblem]:
        """Every record of the catalog at ``source``, in walk order, after the first ``skip``.

        Skipped items are not read; skipped catalogs and collections are (their links are
        needed), but not yielded. The root is read now: CrawlError when it is unusable, before
        anything else happens.
        """
        root = root_href(source)
        try:
            doc = self._node(root)
        except _Unusable as e:
            raise CrawlError(f"{shown(root)}: {e}") from None
        return self._walk(root, doc, skip)

    def _walk(
        self, root: str, doc: dict[str, Any], skip: int
    ) -> Iterator[InputRecord | InputProblem]:
        # the walk's stack: (href, document if already read, collection above, link's source)
        stack: list[tuple[str, dict[str, Any] | None, str | None, str]] = [(root, doc, None, "")]
        seen = {root}
        row = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="crawl") as pool:
            while stack:
                href, doc, collection, via = stack.pop()
                if doc is None:
                    try:
                        doc = self._node(href)
                    except _Unusable as e:
                        row += 1
                        if row > skip:
                            self.counts.problems += 1
                            yield InputProblem(shown(href), f"{e}{via}")
                        continue
                kind = doc["type"]
                if kind == "Collection":
                    collection = doc["id"]
                    self.counts.collections += 1
                else:
                    self.counts.catalogs += 1
                links = [ln for ln in doc.get("links", []) if isinstance(ln, dict)]
                if kind == "Collection" or self.load_catalogs:
                    row += 1
                    if row > skip:
                        yield InputRecord(shown(href), _ready(doc, href))
                item_hrefs = _linked(links, "item", href, seen)
                if row + len(item_hrefs) <= skip:  # a resumed walk: all already submitted
                    row += len(item_hrefs)
                    self.counts.skipped += len(item_hrefs)
                else:
                    todo = item_hrefs[max(0, skip - row) :]
                    self.counts.skipped += len(item_hrefs) - len(todo)
                    row += len(item_hrefs) - len(todo)
                    via = f" (item of {shown(href)})"
                    for record in ordered_map(
                        lambda h, c=collection, v=via: self._item(h, c, v),
                        todo,
                        pool,
                        self.workers * 4,
                    ):
                        row += 1
                        if isinstance(record, InputProblem):
                            self.counts.problems += 1
                        else:
                            self.counts.items += 1
                        yield record
                children = _linked(links, "child", href, seen)
                via = f" (child of {shown(href)})"
                stack.extend((child, None, collection, via) for child in reversed(children))

    # -- documents ----------------------------------------------------------------------------

    def _read(self, href: str) -> Any:
        try:
            data = self.fetch(href)
        except Exception as e:
            raise _Unusable(str(e).removeprefix(f"{shown(href)}: ")) from None
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

    def _item(self, href: str, collection: str | None, via: str) -> InputRecord | InputProblem:
        """One item, ready to load, or why not (runs in the pool: it touches no counts)."""
        try:
            doc = self._read(href)
        except _Unusable as e:
            return InputProblem(shown(href), f"{e}{via}")
        if not isinstance(doc, dict) or doc.get("type") != "Feature":
            kind = doc.get("type") if isinstance(doc, dict) else None
            what = f"type={kind!r:.40}" if isinstance(kind, str) else "no type"
            return InputProblem(shown(href), f"not a STAC Item ({what}){via}")
        if not doc.get("collection"):
            if collection is None:
                return InputProblem(
                    shown(href),
                    f"item has no 'collection' and no Collection above it in the catalog{via}",
                )
            doc["collection"] = collection
        return InputRecord(shown(href), _ready(doc, href))


class _Unusable(Exception):
    """One document of the catalog cannot be used (the reason names no href: callers add it)."""


def _linked(links: list[dict[str, Any]], rel: str, base: str, seen: set[str]) -> list[str]:
    """The absolute hrefs of ``rel`` links not walked yet (a catalog may link one twice)."""
    found = []
    for link in links:
        href = link.get("href")
        if link.get("rel") == rel and isinstance(href, str) and href.strip():
            target = resolve(base, href)
            if target not in seen:
                seen.add(target)
                found.append(target)
    return found


def _ready(doc: dict[str, Any], location: str) -> dict[str, Any]:
    """The document with absolute hrefs and without the static tree's links (see module doc)."""
    links = doc.get("links")
    if isinstance(links, list):
        doc["links"] = [
            {**ln, "href": resolve(location, ln["href"])} if isinstance(ln.get("href"), str) else ln
            for ln in links
            if isinstance(ln, dict) and ln.get("rel") not in TREE_RELS
        ]
    assets = doc.get("assets")
    if isinstance(assets, dict):
        for asset in assets.values():
            if isinstance(asset, dict) and isinstance(asset.get("href"), str):
                asset["href"] = resolve(location, asset["href"])
    return doc
