"""Area and count per class inside zones (reports/zones.py), from real files read back."""

from __future__ import annotations

import csv
import io
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.errors import OutputError
from geoseg.reports.results import Results, read_results
from geoseg.reports.zones import (
    ZoneError,
    Zones,
    format_zones_csv,
    measure_zones,
    read_zones,
    write_zones,
)
from geoseg.tasks.measure import measure_geodesic
from geoseg.tasks.write import ObjectBatch
from tests.zones_data import CLASSES, CRS, X0, Y0, square, write_objects, write_zone_file

GROUND = 1 / 0.9996**2  # ground m² per map m² on UTM 32N's central meridian


@pytest.fixture
def output(tmp_path: Path) -> Results:
    """A lawn square straddling two parcels, a building inside parcel 1, a lawn far away."""
    path = write_objects(
        tmp_path / "objects.gpkg",
        [("lawn", square(5, 0)), ("building", square(1, 1, 2)), ("lawn", square(500, 500))],
    )
    return read_results(path)


# Parcels 1 and 2: x 0..10 and 10..20, y -5..15 (metres from X0, Y0).
LEFT = shapely.box(X0, Y0 - 5, X0 + 10, Y0 + 15)
RIGHT = shapely.box(X0 + 10, Y0 - 5, X0 + 20, Y0 + 15)


def test_a_straddling_object_is_split_between_zones_and_adds_up(
    output: Results, tmp_path: Path
) -> None:
    zones = read_zones(write_zone_file(tmp_path / "z.gpkg", [1, 2], [LEFT, RIGHT]), "parcel_id")
    rows = measure_zones(output, zones)

    assert [row.key for row in rows] == [1, 2]
    lawn = [row.area_m2["lawn"] for row in rows]
    assert lawn[0] == pytest.approx(50.0 * GROUND, rel=1e-6)  # x 5..10, y 0..10
    assert lawn[1] == pytest.approx(50.0 * GROUND, rel=1e-6)  # x 10..15
    assert lawn[0] + lawn[1] == pytest.approx(output.objects.area_m2[0], rel=1e-8)
    assert rows[0].area_m2["building"] == pytest.approx(4.0 * GROUND, rel=1e-4)
    assert rows[1].area_m2["building"] == 0.0
    assert rows[0].zone_area_m2 == pytest.approx(200.0 * GROUND, rel=1e-6)
    # The straddling lawn's representative point is in one parcel only: counted once.
    assert rows[0].count["lawn"] + rows[1].count["lawn"] == 1
    assert [row.count["building"] for row in rows] == [1, 0]


def test_zones_in_another_crs_give_the_same_areas(output: Results, tmp_path: Path) -> None:
    utm = read_zones(write_zone_file(tmp_path / "u.gpkg", [1, 2], [LEFT, RIGHT]), "parcel_id")
    lonlat = read_zones(
        write_zone_file(tmp_path / "g.geojson", [1, 2], [LEFT, RIGHT], crs="EPSG:4326"),
        "parcel_id",
    )
    assert lonlat.crs.to_epsg() == 4326
    expected = measure_zones(output, utm)
    got = measure_zones(output, lonlat)
    for a, b in zip(expected, got, strict=True):
        assert b.area_m2["lawn"] == pytest.approx(a.area_m2["lawn"], rel=1e-4)
        assert b.zone_area_m2 == pytest.approx(a.zone_area_m2, rel=1e-4)
        assert b.count == a.count


def test_rows_sharing_a_key_are_one_zone_and_never_count_twice(
    output: Results, tmp_path: Path
) -> None:
    # Parcel 7 is stored as two overlapping rows covering the left parcel.
    path = write_zone_file(
        tmp_path / "z.shp", [7, 7], [LEFT, shapely.box(X0, Y0 - 5, X0 + 8, Y0 + 15)]
    )
    (row,) = measure_zones(output, read_zones(path, "parcel_id"))
    assert row.area_m2["lawn"] == pytest.approx(50.0 * GROUND, rel=1e-6)
    assert row.zone_area_m2 == pytest.approx(200.0 * GROUND, rel=1e-6)


def test_zones_elsewhere_get_zero(output: Results, tmp_path: Path) -> None:
    far = square(90_000, 90_000)
    (row,) = measure_zones(
        output, read_zones(write_zone_file(tmp_path / "z.gpkg", ["x"], [far]), "parcel_id")
    )
    assert row.area_m2 == {"lawn": 0.0, "building": 0.0}
    assert row.count == {"lawn": 0, "building": 0}


@pytest.mark.parametrize("suffix", [".csv", ".gpkg"])
def test_written_tables_read_back(output: Results, tmp_path: Path, suffix: str) -> None:
    zones = read_zones(write_zone_file(tmp_path / "z.gpkg", [1, 2], [LEFT, RIGHT]), "parcel_id")
    rows = measure_zones(output, zones)
    target = tmp_path / f"zones{suffix}"
    write_zones(rows, zones, CLASSES, target)

    header = ["parcel_id", "zone_area_m2", "lawn_area_m2", "lawn_count",
              "building_area_m2", "building_count"]  # fmt: skip
    if suffix == ".csv":
        table = list(csv.reader(io.StringIO(target.read_text())))
        assert table[0] == header
        assert float(table[1][2]) == rows[0].area_m2["lawn"]
        assert table[1][5] == "1"
    else:
        frame = pyogrio.read_dataframe(target, layer="zones")
        assert list(frame.columns) == [*header, "geometry"]
        assert frame["parcel_id"].tolist() == [1, 2]
        assert frame["lawn_area_m2"].tolist() == [row.area_m2["lawn"] for row in rows]
        assert frame.crs == pyproj.CRS(CRS)
        assert frame.geometry.iloc[0].equals(shapely.MultiPolygon([LEFT]))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_existing_output_is_kept_without_overwrite(output: Results, tmp_path: Path) -> None:
    zones = read_zones(write_zone_file(tmp_path / "z.gpkg", [1], [LEFT]), "parcel_id")
    target = tmp_path / "zones.csv"
    target.write_text("keep")
    with pytest.raises(OutputError, match="already exists"):
        write_zones(measure_zones(output, zones), zones, CLASSES, target)
    assert target.read_text() == "keep"


def test_bad_zone_files_are_one_line_errors(tmp_path: Path) -> None:
    good = write_zone_file(tmp_path / "z.gpkg", [1], [LEFT])
    write_zone_file(good, ["a"], [RIGHT], layer="districts", column="name", append=True)
    text = tmp_path / "notes.gpkg"
    text.write_text("not vector data")
    cases = {
        (tmp_path / "absent.gpkg", "parcel_id", None): "absent.gpkg does not exist",
        (text, "parcel_id", None): "notes.gpkg cannot be read",
        (good, "parcel_id", None): "has 2 layers (z, districts); choose one with --layer",
        (good, "parcel_id", "roads"): "has no layer 'roads'",
        (good, "owner", "z"): "has no column 'owner' for --by; its columns are parcel_id",
    }
    for (path, by, layer), message in cases.items():
        with pytest.raises(ZoneError, match=re.escape(message)) as error:
            read_zones(path, by, layer)
        assert "\n" not in str(error.value)
    assert read_zones(good, "name", "districts").keys.tolist() == ["a"]


def test_csv_rendering_keeps_full_precision(output: Results, tmp_path: Path) -> None:
    zones = read_zones(write_zone_file(tmp_path / "z.gpkg", [1], [LEFT]), "parcel_id")
    rows = measure_zones(output, zones)
    text = format_zones_csv(rows, "parcel_id", CLASSES)
    assert text.splitlines()[1].split(",")[2] == repr(rows[0].area_m2["lawn"])


def results_of(objects: list[shapely.Geometry]) -> Results:
    geometry = np.array([shapely.MultiPolygon([g]) for g in objects], dtype=object)
    n = len(objects)
    return Results(
        path=Path("memory.gpkg"),
        crs_wkt=pyproj.CRS(CRS).to_wkt(),
        class_names=("lawn",),
        sources=("scene.tif",),
        objects=ObjectBatch(
            geometry=geometry,
            object_id=np.array([str(i) for i in range(n)], dtype=object),
            class_name=np.full(n, "lawn", dtype=object),
            score=np.ones(n),
            area_m2=np.zeros(n),
            perimeter_m=np.zeros(n),
            source=np.full(n, "scene.tif", dtype=object),
        ),
    )


coordinate = st.integers(min_value=0, max_value=60)


@settings(max_examples=30, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(coordinate, coordinate, st.integers(1, 25), st.integers(1, 25)),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(1, 59), max_size=3, unique=True),
)
def test_zone_areas_sum_to_the_objects_area_inside_the_zones(
    boxes: list[tuple[int, int, int, int]], cuts: list[int]
) -> None:
    objects = [shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h) for x, y, w, h in boxes]
    edges = [0, *sorted(cuts), 60]  # strips x a..b, y 10..40, partitioning x 0..60
    strips = [shapely.box(X0 + a, Y0 + 10, X0 + b, Y0 + 40) for a, b in pairwise(edges)]
    zones = Zones(
        path=Path("zones.gpkg"),
        by="id",
        keys=np.arange(len(strips)).astype(object),
        geometry=np.array(strips, dtype=object),
        crs=pyproj.CRS(CRS),
    )
    rows = measure_zones(results_of(objects), zones)
    inside = shapely.intersection(np.array(objects), shapely.box(X0, Y0 + 10, X0 + 60, Y0 + 40))
    inside[shapely.area(inside) == 0] = shapely.Polygon()  # touching: a line, no area
    expected, _ = measure_geodesic(inside, pyproj.CRS(CRS))
    assert sum(row.area_m2["lawn"] for row in rows) == pytest.approx(
        expected.sum(), abs=1e-4
    )  # geodesic noise: µm² per piece
    assert sum(row.count["lawn"] for row in rows) <= len(objects)


def test_a_zone_the_output_crs_cannot_express_overlaps_nothing() -> None:
    # (-170, -52) is the antipode of Lambert azimuthal equal-area Europe's centre: infinite there.
    corner = shapely.box(-170, -52, -169, -51)
    zones = Zones(
        path=Path("zones.geojson"),
        by="id",
        keys=np.array(["antipode", "berlin"], dtype=object),
        geometry=np.array([corner, shapely.box(13.3, 52.4, 13.5, 52.6)], dtype=object),
        crs=pyproj.CRS("EPSG:4326"),
    )
    moved = zones.to_crs(pyproj.CRS("EPSG:3035"))
    assert moved[0].is_empty
    # An equal-area CRS: the planar area of the reprojected zone is its ground area.
    ground, _ = measure_geodesic(zones.geometry[1:], zones.crs)
    assert shapely.area(moved[1]) == pytest.approx(ground[0], rel=1e-4)
