"""Turn STAC items into the rows pypgstac's ``load_partition`` COPYs, a batch at a time.

Same output as ``pypgstac.load.Loader.format_item`` (a test holds the two together), with one
difference: geometries are converted to EWKB for the whole batch in one call to GEOS through
shapely, instead of one pure-Python plpygis conversion per item, which was the largest single
cost between the SQS record and the COPY. Anything shapely cannot read goes through
``format_item`` itself, so errors read exactly as pypgstac's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import shapely
from pypgstac.hydration import dehydrate
from pypgstac.load import Loader

SRID = 4326


def ewkb_hex(geometries: Sequence[Any]) -> list[str | None]:
    """Hex EWKB with SRID 4326 per GeoJSON geometry; None where GEOS cannot read it."""
    encoded = [orjson.dumps(g) for g in geometries]
    parsed = shapely.from_geojson(encoded, on_invalid="ignore")
    parsed = shapely.set_srid(parsed, SRID)
    return shapely.to_wkb(parsed, hex=True, include_srid=True).tolist()


def _partition_name(key: int, partition_trunc: str | None, start: str) -> str:
    if partition_trunc == "year":
        return f"_items_{key}_{start.replace('-', '')[:4]}"
    if partition_trunc == "month":
        return f"_items_{key}_{start.replace('-', '')[:6]}"
    return f"_items_{key}"


def format_row(loader: Loader, item: dict[str, Any], geometry: str | None) -> dict[str, Any]:
    """One item as a row, given its EWKB; falls back to pypgstac when there is none."""
    if geometry is None:
        return loader.format_item(item)
    base_item, key, partition_trunc = loader.collection_json(item["collection"])
    properties = item.get("properties", {})
    dt, edt, sdt = (properties.get(k) for k in ("datetime", "end_datetime", "start_datetime"))
    if edt is not None and sdt is not None:
        start, end = sdt, edt
    elif dt is not None:
        start, end = dt, dt
    else:
        raise ValueError("Invalid datetime encountered")
    content = dehydrate(base_item, item)
    for stored_in_columns in ("id", "collection", "geometry"):
        content.pop(stored_in_columns, None)
    private = content.pop("private", None)
    return {
        "id": item.get("id"),
        "collection": item.get("collection"),
        "datetime": start,
        "end_datetime": end,
        "partition": _partition_name(key, partition_trunc, start),
        "geometry": geometry,
        "content": orjson.dumps(content).decode(),
        "private": orjson.dumps(private).decode() if private is not None else None,
    }
