"""Ages and instants as people type them (``--since 1h``, ``?since=2026-12-07T10:00:00Z``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``30s``, ``15m``, ``1h``, ``2d``, ``1w`` ago, or an RFC 3339 instant (UTC if no offset);
    ValueError saying what is expected otherwise."""
    now = now or datetime.now(UTC)
    if match := _AGE.match(value):
        try:
            return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
        except (OverflowError, ValueError):
            raise ValueError("that is longer ago than a date can say") from None
    try:
        instant = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            "expected an age (30s, 15m, 1h, 2d, 1w) or a date-time (2026-12-07T10:00:00Z)"
        ) from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)
