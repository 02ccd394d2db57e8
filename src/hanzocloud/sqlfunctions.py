"""SQL functions every tenant connection gets (SQLCipher's SQLite has no math functions)."""

from __future__ import annotations

import math
from typing import Any

EARTH_RADIUS_KM = 6371.0  # the mean radius


def geo_distance(lon_a: Any, lat_a: Any, lon_b: Any, lat_b: Any) -> float | None:
    """Great-circle distance in kilometres between two (longitude, latitude) points given in
    degrees (haversine); NULL when any of them is not a number."""
    try:
        degrees = [float(v) for v in (lon_a, lat_a, lon_b, lat_b)]
    except (TypeError, ValueError, OverflowError):
        return None
    if not all(math.isfinite(d) for d in degrees):  # sin(inf) raises: a query error
        return None
    lon1, lat1, lon2, lat2 = (math.radians(d) for d in degrees)
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def install(conn: Any) -> None:
    """Register the functions on one sqlite3/sqlcipher3 connection."""
    conn.create_function("hc_geo_distance", 4, geo_distance, deterministic=True)
