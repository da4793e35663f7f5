"""The status page at ``/ingest/``: what a person wants to see at a glance, from the ledger.

Counts per state, items loaded over time (an SVG bar chart, no script), the recent failures
with their reasons and a redrive button for the dead-lettered ones, and the recently loaded
requests with each item linked to its STAC API URL. Rendered on the server in one pass; every
value that came from a message is escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import quote

import psycopg

from ingest_common.ledger import DEAD_LETTERED, FAILED, LOADED, STATES
from item_load import ledger

RECENT = 20
REASON_HEAD, REASON_TAIL = 300, 900
"""A long reason shows its start and its end: a package's own error comes last."""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; }
h1 { font-size: 1.3rem; margin: 0 0 .2rem; } h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; }
nav a { margin-right: 1rem; }
.counts { display: flex; gap: .6rem; flex-wrap: wrap; }
.count { border: 1px solid #d0d7de; border-radius: 6px; padding: .4rem .8rem; min-width: 6rem; }
.count b { display: block; font-size: 1.4rem; }
.failed b, .dead_lettered b { color: #b42318; } .loaded b { color: #1a7f37; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eaeef2;
         vertical-align: top; }
td.reason { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap;
            word-break: break-word; max-width: 50rem; }
.workers { padding: .4rem .8rem; border-radius: 6px; background: #fff1f0; color: #b42318; }
svg text { font-size: 10px; fill: #57606a; }
"""


def _age_window(conn: psycopg.Connection) -> tuple[datetime, str]:
    """The chart's window: the last 24 hours, or the last hour when nothing older loaded."""
    now = datetime.now(UTC)
    older = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM stactools_ingest.ledger WHERE state = 'loaded' "
        "AND updated_at BETWEEN now() - interval '24 hours' AND now() - interval '1 hour')"
    ).fetchone()[0]
    return (now - timedelta(hours=24), "24 hours") if older else (now - timedelta(hours=1), "hour")


def _chart(buckets: list[tuple[datetime, int]], window: str) -> str:
    width, height, pad = 720, 140, 24
    top = max((n for _, n in buckets), default=0) or 1
    bar = (width - pad) / max(len(buckets), 1)
    bars = []
    for k, (start, n) in enumerate(buckets):
        h = (height - 2 * pad) * n / top
        x = pad + k * bar
        y = height - pad - h
        label = f"{n} items loaded from {start:%H:%M} UTC"
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar * 0.8:.1f}" height="{h:.1f}" '
            f'fill="#2f81f7"><title>{escape(label)}</title></rect>'
        )
    first = buckets[0][0] if buckets else datetime.now(UTC)
    return (
        f'<svg role="img" aria-label="items loaded per interval over the last {window}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width}" y2="{height - pad}" stroke="#d0d7de"/>'
        + "".join(bars)
        + f'<text x="{pad}" y="{height - 6}">{first:%H:%M} UTC</text>'
        + f'<text x="{width - 60}" y="{height - 6}">now</text>'
        + f'<text x="{pad}" y="12">{top} items</text></svg>'
    )


def _item_links(root: str, row: dict[str, Any]) -> str:
    if not row["items"] and row["collection"]:  # a collection (request): link the collection
        href = f"{root}collections/{quote(row['collection'], safe='')}"
        return f'collection <a href="{escape(href)}">{escape(row["collection"])}</a>'
    links = []
    for item in row["items"][:10]:
        c, i = item["collection"], item["id"]
        href = f"{root}collections/{quote(c, safe='')}/items/{quote(i, safe='')}"
        links.append(f'<a href="{escape(href)}">{escape(c)}/{escape(i)}</a>')
    more = len(row["items"]) - 10
    return ", ".join(links) + (f" and {more} more" if more > 0 else "")


def _reason(text: str | None) -> str:
    text = text or ""
    cut = len(text) > REASON_HEAD + REASON_TAIL
    shown = f"{text[:REASON_HEAD]} … {text[-REASON_TAIL:]}" if cut else text
    return f'<td class="reason" title="{escape(text)}">{escape(shown)}</td>'


def render_page(conn: psycopg.Connection | None, root: str, errors: list[BaseException]) -> str:
    """The whole page; ``conn`` None when the database has no ledger yet (nothing loaded)."""
    counts = dict.fromkeys(STATES, 0)
    failures: list[dict[str, Any]] = []
    loaded: list[dict[str, Any]] = []
    buckets: list[tuple[datetime, int]] = []
    window = "hour"
    if conn is not None:
        counts = ledger.counts(conn)
        failures = sorted(
            ledger.find(conn, state=FAILED, limit=RECENT)
            + ledger.find(conn, state=DEAD_LETTERED, limit=RECENT),
            key=lambda r: r["updated_at"],
            reverse=True,
        )[:RECENT]
        loaded = ledger.find(conn, state=LOADED, limit=RECENT)
        since, window = _age_window(conn)
        buckets = ledger.loaded_over_time(conn, since, 24 if window == "24 hours" else 30)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width'>",
        "<title>stactools-ingest: status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>stactools-ingest</h1>",
        f'<nav><a href="{escape(root)}">STAC API</a>'
        f'<a href="{escape(root)}collections">collections</a>'
        f'<a href="{escape(root)}ingest/requests">ledger (JSON)</a>'
        f'<a href="{escape(root)}api.html">API docs</a></nav>',
    ]
    if errors:
        parts.append(
            f'<p class="workers">The workers stopped: {escape(str(errors[0]))}. Requests are '
            "queued but not processed until serve is restarted.</p>"
        )
    parts.append('<h2>Requests by state</h2><div class="counts">')
    for state, n in counts.items():
        parts.append(
            f'<div class="count {state}"><b>{n}</b>'
            f'<a href="{escape(root)}ingest/requests?state={state}">{state}</a></div>'
        )
    parts.append("</div>")
    parts.append(f"<h2>Items loaded over the last {window}</h2>")
    parts.append(_chart(buckets, window))
    parts.append("<h2>Recent failures</h2>")
    if failures:
        parts.append(
            "<table><tr><th>request</th><th>state</th><th>stage</th><th>attempts</th>"
            "<th>reason</th><th>updated</th><th></th></tr>"
        )
        for row in failures:
            rid = row["request_id"]
            action = ""
            if row["state"] == DEAD_LETTERED:
                target = f"{root}ingest/redrive/{quote(rid, safe='')}"
                action = (
                    f'<form method="post" action="{escape(target)}">'
                    '<button type="submit">redrive</button></form>'
                )
            parts.append(
                f"<tr><td>{escape(rid)}</td><td>{row['state']}</td>"
                f"<td>{escape(row['stage'])}</td><td>{row['attempts']}</td>"
                + _reason(row["error"])
                + f"<td>{row['updated_at'][:19]}</td><td>{action}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    parts.append("<h2>Recently loaded</h2>")
    if loaded:
        parts.append("<table><tr><th>request</th><th>items</th><th>updated</th></tr>")
        for row in loaded:
            parts.append(
                f"<tr><td>{escape(row['request_id'])}</td><td>{_item_links(root, row)}</td>"
                f"<td>{row['updated_at'][:19]}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>Nothing yet.</p>")
    parts.append("</body></html>")
    return "".join(parts)
