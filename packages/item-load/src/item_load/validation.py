"""Checks that find, before any database round trip, what pgstac would refuse or store wrongly.

Each reason names the item and says what to fix; the load then fails that item's message alone
instead of a COPY group.

Datetimes are parsed here, strictly as RFC 3339, and normalised to UTC instants rounded to
microseconds exactly as PostgreSQL rounds them, so the partition an item is put in, the
partition bounds and the stored value all agree whatever the text looked like.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from item_load.errors import InvalidItem

# RFC 3339 section 5.6 date-time, ASCII digits only; 't', 'z' and a space for 'T' are allowed
# (section 5.6 notes). A missing offset is read as UTC: see parse_datetime.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?"
)
_ONE_SECOND = timedelta(seconds=1)


def label(value: Any, width: int = 80) -> str:
    """An id for a reason text: repr'd (control characters show) and cut to ``width``."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def parse_datetime(value: Any, name: str) -> datetime:
    """The UTC instant PostgreSQL stores for an RFC 3339 date-time; ValueError saying why not.

    - Any RFC 3339 offset (up to ±23:59) is applied here, so PostgreSQL, which refuses offsets
      beyond ±15:59, never sees one.
    - Fractions round to microseconds half to even, as PostgreSQL does (``rint``): .9999995 s
      becomes the next second, and the next month at a month's last instant.
    - Second 60 (a leap second) rolls over to the next minute, as PostgreSQL does.
    - Without an offset the time is read as UTC, never as a session's local time: pgstac's
      convention, and what pystac writes for naive datetimes. Rejecting it would dead-letter
      items whose meaning is not in doubt.
    - ISO 8601 forms outside RFC 3339 (week or ordinal dates, basic format, a date alone,
      missing seconds, hour 24), which Python or PostgreSQL would read differently or refuse,
      are rejected.
    """
    if not isinstance(value, str):
        raise ValueError(f"properties.{name} must be an RFC 3339 string, got {label(value, 40)}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(
            f"properties.{name} {label(value, 60)} is not an RFC 3339 date-time; "
            "write YYYY-MM-DDThh:mm:ss[.fraction] with Z or an offset like +02:00"
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        if sign and (int(off_h) > 23 or int(off_m) > 59):
            raise ValueError("offset")
        if (
            (fraction is None or len(fraction) <= 7)
            and second != "60"
            and value[10] == "T"
            and zulu != "z"
        ):
            # The usual form: Python's C parser reads it exactly as PostgreSQL would.
            parsed = datetime.fromisoformat(value)
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        leap = second == "60"
        instant = datetime(
            int(year), int(month), int(day), int(hour), int(minute),
            59 if leap else int(second), tzinfo=UTC,
        )  # fmt: skip
        if leap:
            instant += _ONE_SECOND
        if fraction:
            # PostgreSQL: fsec = rint(strtod(".ddd") * 1e6); Python's float() and round()
            # are the same correctly rounded parse and half-to-even rounding.
            instant += timedelta(microseconds=round(float(fraction) * 1_000_000))
        if sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            instant = instant - offset if sign == "+" else instant + offset
    except (ValueError, OverflowError):
        raise ValueError(
            f"properties.{name} {label(value, 60)} is not a valid RFC 3339 date-time "
            "(a field or the UTC instant is out of range)"
        ) from None
    return instant


def _rings(geometry: dict[str, Any]) -> list[Any]:
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        return list(coords) if isinstance(coords, list) else [None]
    if kind == "MultiPolygon":
        return [r for p in coords for r in p] if isinstance(coords, list) else [None]
    return []


def geometry_problem(geometry: Any) -> str | None:
    """GeoJSON mistakes PostGIS would store silently (unclosed rings) or reject obscurely."""
    if not isinstance(geometry, dict) or "type" not in geometry:
        return "has no GeoJSON 'geometry'; pgstac requires one"
    if geometry["type"] != "GeometryCollection" and not isinstance(
        geometry.get("coordinates"), list
    ):
        return f"has a {geometry['type']} geometry without a coordinates array"
    try:
        for ring in _rings(geometry):
            if not isinstance(ring, list) or len(ring) < 4 or ring[0] != ring[-1]:
                return (
                    f"has an invalid {geometry['type']}: every ring needs at least 4 positions "
                    "and must end where it starts (RFC 7946 section 3.1.6)"
                )
    except TypeError:
        return f"has a malformed {geometry['type']} coordinates array"
    return None


class Span(NamedTuple):
    """An item's time span as UTC instants, parsed once: the datetime and end_datetime pgstac
    stores (start_datetime and end_datetime when both are set), its partition and bounds."""

    lower: datetime
    upper: datetime


def check_item(item: dict[str, Any]) -> Span:
    """The item's time span, or InvalidItem saying why pgstac would reject or misstore it.

    Found before COPY, so a bad item costs no database round trip and fails its message alone.
    """
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise InvalidItem("item has no 'id' string")
    collection = item.get("collection")
    if not isinstance(collection, str) or not collection:
        raise InvalidItem(
            f"item {item_id} has no 'collection'; set it to the id of a collection in pgstac"
        )
    geometry = geometry_problem(item.get("geometry"))
    if geometry:
        raise InvalidItem(f"item {item_id} {geometry}")
    props = item.get("properties")
    if not isinstance(props, dict):
        raise InvalidItem(f"item {item_id} has no 'properties' object")
    try:
        start, end = props.get("start_datetime"), props.get("end_datetime")
        if start is not None and end is not None:
            lower = parse_datetime(start, "start_datetime")
            upper = parse_datetime(end, "end_datetime")
            if lower > upper:
                raise InvalidItem(f"item {label(item_id)} has start_datetime after end_datetime")
            return Span(lower, upper)
        start = props.get("datetime")
        if start is not None:
            lower = parse_datetime(start, "datetime")
            return Span(lower, lower)
    except ValueError as e:
        raise InvalidItem(f"item {label(item_id)}: {e}") from None
    raise InvalidItem(
        f"item {item_id} has no datetime: set properties.datetime, or both "
        "start_datetime and end_datetime"
    )
