"""Filter functions: strftime(format, time, modifiers…) and geoDistance(lonA, latA, lonB, latB)."""

from __future__ import annotations

import math

import pytest
from cloud import Cloud

from hanzocloud.sqlfunctions import geo_distance
from subsystems.base.filter_parse import varies

from .support import Api, api_for, assert_error

PLACES = [{"name": "name", "type": "text"}, {"name": "lon", "type": "number"},
          {"name": "lat", "type": "number"}, {"name": "when", "type": "date"},
          {"name": "tags", "type": "select", "values": ["a", "b"], "maxSelect": 2},
          {"name": "meta", "type": "json"}]
SOFIA, PLOVDIV, LONDON = (23.3219, 42.6977), (24.7453, 42.1354), (-0.1276, 51.5072)


@pytest.fixture
async def places(api: Api) -> Api:
    await api.collection("places", PLACES)
    for name, (lon, lat), when in (("sofia", SOFIA, "2024-03-05 10:00:00.000Z"),
                                   ("plovdiv", PLOVDIV, "2025-07-01 00:00:00.000Z"),
                                   ("london", LONDON, "2025-12-31 23:59:59.000Z")):
        await api.create("places", {"name": name, "lon": lon, "lat": lat, "when": when,
                                    "meta": {"lon": lon}})
    await api.create("places", {"name": "nowhere"})  # lon/lat 0, no date
    return api


async def names(api: Api, text: str) -> list[str]:
    return sorted(i["name"] for i in await api.items("places", filter=text))


def test_geo_distance_is_haversine_in_kilometres() -> None:
    assert geo_distance(*SOFIA, *SOFIA) == 0
    assert 130 < geo_distance(*SOFIA, *PLOVDIV) < 133  # type: ignore[operator]
    assert 2010 < geo_distance(*SOFIA, *LONDON) < 2030  # type: ignore[operator]
    assert math.isclose(geo_distance(0, 0, 180, 0), math.pi * 6371.0)  # type: ignore[arg-type]
    assert geo_distance(None, 1, 2, 3) is None and geo_distance("x", 1, 2, 3) is None
    assert geo_distance(float("nan"), 1, 2, 3) is None
    assert geo_distance("1e999", 1, 2, 3) is None and geo_distance(float("-inf"), 1, 2, 3) is None


async def test_geo_distance_in_filters(places: Api) -> None:
    assert await names(places, f"geoDistance(lon, lat, {SOFIA[0]}, {SOFIA[1]}) < 200") == [
        "plovdiv", "sofia"]
    assert await names(places, f"geoDistance({SOFIA[0]}, {SOFIA[1]}, lon, lat) > 1000") == [
        "london", "nowhere"]
    # json paths count as single values too; nested calls and null work
    assert await names(places, f"geoDistance(meta.lon, lat, {LONDON[0]}, {LONDON[1]}) < 1") \
        == ["london"]
    assert await names(places, "geoDistance(null, lat, 1, 2) = null") == [
        "london", "nowhere", "plovdiv", "sofia"]
    # A stored value that overflows to infinity is no number, not a failed query.
    await places.create("places", {"name": "overflow", "meta": {"lon": "1e999"}})
    assert await names(places, "geoDistance(meta.lon, lat, 1, 2) = null") == [
        "nowhere", "overflow"]


async def test_strftime_in_filters(places: Api) -> None:
    assert await names(places, "strftime('%Y', when) = '2025'") == ["london", "plovdiv"]
    assert await names(places, "strftime('%Y-%m', when, '+1 month') = '2024-04'") == ["sofia"]
    assert await names(places, "strftime('%Y', created) = strftime('%Y', 'now')") == [
        "london", "nowhere", "plovdiv", "sofia"]
    assert await names(places, "strftime('%Y', @now) = strftime('%Y', created)") == [
        "london", "nowhere", "plovdiv", "sofia"]
    assert varies("strftime('%Y', @now) = '2026'")
    assert not varies("strftime('%Y', created) = '2026'")


@pytest.mark.parametrize("text", [
    "nope(1) = 1", "geoDistance(1, 2, 3) < 4", "geoDistance(1, 2, 3, 'x') < 4",
    "geoDistance(tags, 1, 2, 3) < 4", "geoDistance(@collection.places.lon, 1, 2, 3) < 4",
    "geoDistance(@request.auth.roles, 1, 2, 3) < 4", "strftime() = 1", "strftime(when) = 1",
    "strftime(name, when) = 1", "strftime('%Y', when, 3) = 1", "geoDistance(1, 2, 3, 4",
    "strftime('%Y', missing) = 1", f"geoDistance({', '.join(['1'] * 9)}) < 1"])
async def test_bad_calls_are_400(places: Api, text: str) -> None:
    assert_error(await places.get("/collections/places/records", filter=text), 400)


async def test_functions_in_rules(cloud: Cloud, api: Api) -> None:
    await api.collection("places", PLACES,
                         listRule=f"geoDistance(lon, lat, {SOFIA[0]}, {SOFIA[1]}) < 200",
                         viewRule="strftime('%Y', when) = '2025'")
    made = {}
    for name, (lon, lat), when in (("sofia", SOFIA, "2024-03-05 10:00:00.000Z"),
                                   ("london", LONDON, "2025-12-31 23:59:59.000Z")):
        made[name] = await api.create("places", {"name": name, "lon": lon, "lat": lat,
                                                 "when": when})
    member = await api_for(cloud, user="bob", roles=("editor",))
    assert [i["name"] for i in await member.items("places")] == ["sofia"]
    assert (await member.get(f"/collections/places/records/{made['london']['id']}")
            ).status_code == 200
    assert_error(await member.get(f"/collections/places/records/{made['sofia']['id']}"), 404)
