"""Change between two runs (reports/compare.py), from real GeoPackages read back."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import pytest
import shapely

from geoseg.errors import OptionsError
from geoseg.reports.compare import (
    Comparison,
    compare,
    format_comparison,
    match_objects,
    write_changes,
)
from geoseg.reports.results import read_results
from geoseg.reports.zones import read_zones
from tests.zones_data import CRS, X0, Y0, write_two_dates, write_zone_file


@pytest.fixture
def dates(tmp_path: Path) -> tuple[Path, Path]:
    return write_two_dates(tmp_path)


def statuses(comparison: Comparison, class_name: str) -> list[tuple[str, str | None, str | None]]:
    return [
        (c.status, c.before_id, c.after_id)
        for c in comparison.objects
        if c.class_name == class_name
    ]


def test_objects_are_matched_by_iou(dates: tuple[Path, Path]) -> None:
    before, after = (read_results(p) for p in dates)
    comparison = compare(before, after)

    assert statuses(comparison, "lawn") == [
        ("persisted", "scene.tif:0:0", "scene.tif:0:0"),
        ("appeared", None, "scene.tif:1:0"),
        ("appeared", None, "scene.tif:2:0"),
        ("disappeared", "scene.tif:1:0", None),
        ("disappeared", "scene.tif:2:0", None),
    ]
    assert comparison.objects[0].iou == pytest.approx(90 / 110)
    lawn, building = comparison.classes
    assert (lawn.before_count, lawn.after_count) == (3, 3)
    assert (lawn.persisted, lawn.appeared, lawn.disappeared) == (1, 2, 2)
    assert lawn.before_area_m2 == pytest.approx(before.objects.area_m2[:3].sum())
    assert lawn.change_m2 == pytest.approx(0.0, abs=1e-6)  # three 10 m squares either way
    assert (building.persisted, building.appeared, building.disappeared) == (1, 0, 0)
    assert building.change_pct == pytest.approx(0.0, abs=1e-9)


def test_a_lower_threshold_keeps_the_moved_lawn(dates: tuple[Path, Path]) -> None:
    comparison = compare(*(read_results(p) for p in dates), threshold=0.2)
    lawn = comparison.classes[0]
    assert (lawn.persisted, lawn.appeared, lawn.disappeared) == (2, 1, 1)
    assert [c.iou for c in comparison.objects if c.status == "persisted"][1] == pytest.approx(
        40 / 160
    )


def test_runs_in_different_crs_are_compared_in_the_first_ones(tmp_path: Path) -> None:
    before, after = write_two_dates(tmp_path, after_crs="EPSG:4326")
    comparison = compare(read_results(before), read_results(after))
    lawn = comparison.classes[0]
    assert (lawn.persisted, lawn.appeared, lawn.disappeared) == (1, 2, 2)
    assert comparison.objects[0].iou == pytest.approx(90 / 110, rel=1e-3)
    assert pyproj.CRS(comparison.crs_wkt) == pyproj.CRS(CRS)
    assert comparison.geometry[0].bounds == pytest.approx((X0 + 1, Y0, X0 + 11, Y0 + 10), abs=0.01)


def test_one_to_one_matching_takes_the_best_pair_first() -> None:
    wide = shapely.box(0, 0, 10, 10)
    left, right = shapely.box(0, 0, 6, 10), shapely.box(6, 0, 10, 10)
    assert match_objects(np.array([wide]), np.array([right, left]), 0.3) == [(0, 1, 0.6)]
    assert match_objects(np.array([wide]), np.array([], dtype=object), 0.5) == []
    with pytest.raises(OptionsError, match="IoU threshold"):
        match_objects(np.array([wide]), np.array([wide]), 0.0)


def test_change_per_zone(dates: tuple[Path, Path], tmp_path: Path) -> None:
    west = shapely.box(X0 - 5, Y0 - 5, X0 + 150, Y0 + 15)  # the first three lawns' places
    east = shapely.box(X0 + 150, Y0 - 5, X0 + 400, Y0 + 15)  # the new lawn and the building
    zones = read_zones(
        write_zone_file(tmp_path / "z.gpkg", ["west", "east"], [west, east]), "parcel_id"
    )
    before, after = (read_results(p) for p in dates)
    comparison = compare(before, after, zones=zones)

    change = {(z.zone, z.class_name): z for z in comparison.zones}
    assert set(change) == {(z, c) for z in ("west", "east") for c in ("lawn", "building")}
    one = after.objects.area_m2[2]  # a whole 10 m square
    assert change["west", "lawn"].change_m2 == pytest.approx(-one, rel=1e-6)
    assert change["east", "lawn"].change_m2 == pytest.approx(one, rel=1e-6)
    assert change["east", "building"].change_m2 == pytest.approx(0.0, abs=1e-6)


def test_renderings(dates: tuple[Path, Path]) -> None:
    comparison = compare(*(read_results(p) for p in dates))
    table = format_comparison(comparison, "table").splitlines()
    assert table[0].split()[:6] == [
        "class",
        "before",
        "after",
        "persisted",
        "appeared",
        "disappeared",
    ]
    assert table[1].split()[:6] == ["lawn", "3", "3", "1", "2", "2"]
    assert table[-1] == "(objects matched at IoU ≥ 0.5)"
    rows = list(csv.DictReader(io.StringIO(format_comparison(comparison, "csv"))))
    assert rows[1]["class_name"] == "building"
    assert float(rows[1]["before_area_m2"]) == comparison.classes[1].before_area_m2
    document = json.loads(format_comparison(comparison, "json"))
    assert document["iou_threshold"] == 0.5
    assert [o["status"] for o in document["objects"]].count("appeared") == 2


def test_geopackage_of_changes_reads_back(dates: tuple[Path, Path], tmp_path: Path) -> None:
    comparison = compare(*(read_results(p) for p in dates))
    target = tmp_path / "changes.gpkg"
    write_changes(comparison, target)

    changes = pyogrio.read_dataframe(target, layer="changes")
    assert changes["status"].tolist() == [c.status for c in comparison.objects]
    assert changes.crs == pyproj.CRS(CRS)
    gone = changes[changes["status"] == "disappeared"]
    assert gone["after_id"].isna().all()
    assert gone.geometry.iloc[0].equals(
        shapely.MultiPolygon([shapely.box(X0 + 50, Y0, X0 + 60, Y0 + 10)])
    )
    classes = pyogrio.read_dataframe(target, layer="classes")
    assert classes["appeared"].tolist() == [2, 0]
    assert [name for name, _ in pyogrio.list_layers(target)] == ["changes", "classes"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
