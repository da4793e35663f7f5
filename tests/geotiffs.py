"""Tiny GeoTIFFs laid out as the GLAD GLCLU2020 package expects: ``<root>/<year>/<loc>.tif``."""

from __future__ import annotations

from pathlib import Path

GLAD_PACKAGE = "stactools-glad-glclu2020==0.1.1"
GLAD_EXTRAS = ["affine<3"]
GLAD_GROUP = "gladglclu2020"
GLAD_COLLECTION = "glad-glclu2020-v2"


def write_tile(path: Path, lon: int, lat: int, size: int = 8) -> Path:
    """A 10x10 degree uint8 tile whose top-left corner is (lon, lat)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.arange(size * size, dtype="uint8") % 250).reshape(1, size, size)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=size,
        width=size,
        count=1,
        dtype="uint8",
        crs="EPSG:4326",
        transform=from_origin(lon, lat, 10 / size, 10 / size),
        compress="deflate",
    ) as dst:
        dst.write(data)
    return path


def loc_name(lon: int, lat: int) -> str:
    """GLAD tile names: ``50N_010E`` is the tile whose top-left corner is 10E, 50N."""
    ns = f"{abs(lat):02d}{'N' if lat >= 0 else 'S'}"
    ew = f"{abs(lon):03d}{'E' if lon >= 0 else 'W'}"
    return f"{ns}_{ew}"


def glad_tiles(root: Path, year: int = 2020, corners=((10, 50), (20, 50))) -> list[Path]:
    """Write tiles for ``year`` under ``root`` and return their paths."""
    return [
        write_tile(root / str(year) / f"{loc_name(lon, lat)}.tif", lon, lat) for lon, lat in corners
    ]


def glad_item_request(tif: Path, root: Path, **extra) -> dict:
    """An item request for one tile, with ``--href-format`` pointing at the local layout."""
    return {
        "package_name": GLAD_PACKAGE,
        "group_name": GLAD_GROUP,
        "create_item_args": [str(tif)],
        "create_item_options": {"href-format": f"{root}/{{year}}/{{loc}}.tif"},
        "extra_packages": GLAD_EXTRAS,
        **extra,
    }


def glad_collection_request(**extra) -> dict:
    """A collection request for the annual GLAD collection."""
    return {
        "package_name": GLAD_PACKAGE,
        "group_name": GLAD_GROUP,
        "create_collection_args": [],
        "create_collection_options": {
            "type": "annual",
            "media-type": "image/tiff; application=geotiff",
        },
        "extra_packages": GLAD_EXTRAS,
        **extra,
    }
