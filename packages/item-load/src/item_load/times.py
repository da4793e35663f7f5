"""RFC 3339 date-times read as the UTC instants PostgreSQL stores for them.

Parsed here, strictly, and normalised to UTC instants rounded to microseconds exactly as
PostgreSQL rounds them, so the partition an item is put in, the partition bounds and the stored
value all agree whatever the text looked like.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from item_load.errors import label

# RFC 3339 section 5.6 date-time, ASCII digits only; 't', 'z' and a space for 'T' are allowed
# (section 5.6 notes). A missing offset is read as UTC: see parse_datetime.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?"
)
_ONE_SECOND = timedelta(seconds=1)


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
        raise ValueError(f"{name} must be an RFC 3339 string, got {label(value, 40)}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(
            f"{name} {label(value, 60)} is not an RFC 3339 date-time; "
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
            f"{name} {label(value, 60)} is not a valid RFC 3339 date-time "
            "(a field or the UTC instant is out of range)"
        ) from None
    return instant
