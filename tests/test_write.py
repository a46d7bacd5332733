"""Tests for geoseg.tasks.write: atomic, streaming GeoPackage output."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import pytest
import shapely

from geoseg.errors import OptionsError, OutputError
from geoseg.tasks.write import GeoPackageWriter, ObjectBatch, SummaryRow, check_output

CRS_WKT = pyproj.CRS("EPSG:32636").to_wkt()
CLASSES = ("building", "tree crown")
RUN: dict[str, str | int | float | None] = {
    "model_name": "oracle",
    "tile_size": 512,
    "score_threshold": 0.5,
    "dask_address": None,
}


def make_batch(
    classes: list[str], source: str = "a.tif", first_id: int = 0, side_m: float = 10.0
) -> ObjectBatch:
    """One square object per class entry, side ``side_m`` metres, in UTM 36N."""
    n = len(classes)
    x = 500_000 + 100 * np.arange(first_id, first_id + n)
    squares = shapely.box(x, 4_000_000, x + side_m, 4_000_000 + side_m)
    return ObjectBatch(
        geometry=squares,
        object_id=np.array([f"{source}:{i}" for i in range(first_id, first_id + n)], dtype=object),
        class_name=np.array(classes, dtype=object),
        score=np.linspace(0.5, 0.9, n),
        area_m2=np.full(n, side_m**2),
        perimeter_m=np.full(n, 4 * side_m),
        source=np.full(n, source, dtype=object),
    )


def test_objects_summary_and_run_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "objects.gpkg"

    with GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=False) as out:
        out.add_source("a.tif")
        out.add_source("empty.tif")
        out.add(make_batch(["building", "building", "tree crown"]))
        summary = out.finish(RUN)

    layers = pyogrio.list_layers(path)
    assert layers.tolist() == [
        ["building", "MultiPolygon"],
        ["tree crown", "MultiPolygon"],
        ["summary", None],
        ["failures", None],
        ["run", None],
        ["layer_styles", None],
    ]
    buildings = gpd.read_file(path, layer="building")
    assert buildings.crs == pyproj.CRS("EPSG:32636")
    assert list(buildings.columns) == [
        "object_id",
        "class_name",
        "score",
        "area_m2",
        "perimeter_m",
        "source",
        "geometry",
    ]
    assert buildings["object_id"].tolist() == ["a.tif:0", "a.tif:1"]
    assert buildings["class_name"].tolist() == ["building", "building"]
    assert buildings["score"].tolist() == [0.5, 0.7]
    assert buildings["area_m2"].tolist() == [100.0, 100.0]
    assert (buildings.geom_type == "MultiPolygon").all()
    assert buildings.geometry.iloc[0].equals(shapely.box(500_000, 4_000_000, 500_010, 4_000_010))
    info = pyogrio.read_info(path, layer="building")
    assert info["ogr_types"] == ["OFTString"] * 2 + ["OFTReal"] * 3 + ["OFTString"]

    table = pyogrio.read_dataframe(path, layer="summary")
    assert table.to_dict("records") == [
        {"source": "a.tif", "class_name": "building", "count": 2, "total_area_m2": 200.0},
        {"source": "a.tif", "class_name": "tree crown", "count": 1, "total_area_m2": 100.0},
        {"source": "empty.tif", "class_name": "building", "count": 0, "total_area_m2": 0.0},
        {"source": "empty.tif", "class_name": "tree crown", "count": 0, "total_area_m2": 0.0},
    ]
    assert pd.api.types.is_integer_dtype(table["count"])
    assert summary == [SummaryRow(**row) for row in table.to_dict("records")]

    run = pyogrio.read_dataframe(path, layer="run")
    assert list(run.columns) == list(RUN)
    assert run["model_name"].tolist() == ["oracle"]
    assert run["tile_size"].tolist() == [512]
    assert run["score_threshold"].tolist() == [0.5]
    assert run["dask_address"].isna().all()
    assert sorted(os.listdir(tmp_path)) == ["objects.gpkg"]


def test_layers_of_classes_without_objects_exist_and_are_empty(tmp_path: Path) -> None:
    path = tmp_path / "objects.gpkg"

    with GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=False) as out:
        out.add_source("a.tif")
        summary = out.finish(RUN)

    trees = gpd.read_file(path, layer="tree crown")
    assert len(trees) == 0
    assert trees.crs == pyproj.CRS("EPSG:32636")
    assert list(trees.columns)[:-1] == [
        "object_id",
        "class_name",
        "score",
        "area_m2",
        "perimeter_m",
        "source",
    ]
    assert pyogrio.read_info(path, layer="tree crown")["geometry_type"] == "MultiPolygon"
    assert [row.count for row in summary] == [0, 0]


def test_several_batches_stream_into_the_layers(tmp_path: Path) -> None:
    path = tmp_path / "objects.gpkg"

    with GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=False) as out:
        for number in range(5):
            source = f"s{number % 2}.tif"
            out.add_source(source)
            out.add(make_batch(["building", "tree crown", "building"], source, 3 * number))
        out.add(make_batch([], "s0.tif"))
        summary = out.finish(RUN)

    buildings = gpd.read_file(path, layer="building")
    assert len(buildings) == 10
    assert buildings["object_id"].is_unique
    assert len(gpd.read_file(path, layer="tree crown")) == 5
    counts = {(row.source, row.class_name): row.count for row in summary}
    assert counts == {
        ("s0.tif", "building"): 6,
        ("s0.tif", "tree crown"): 3,
        ("s1.tif", "building"): 4,
        ("s1.tif", "tree crown"): 2,
    }
    assert sum(row.total_area_m2 for row in summary) == 1500.0


def test_unregistered_sources_are_registered_by_add(tmp_path: Path) -> None:
    with GeoPackageWriter(tmp_path / "o.gpkg", CRS_WKT, CLASSES, overwrite=False) as out:
        out.add(make_batch(["tree crown"], "late.tif"))
        summary = out.finish(RUN)

    assert [(row.source, row.class_name, row.count) for row in summary] == [
        ("late.tif", "building", 0),
        ("late.tif", "tree crown", 1),
    ]


def test_polygons_and_multipolygons_are_both_written_as_multipolygons(tmp_path: Path) -> None:
    path = tmp_path / "objects.gpkg"
    batch = make_batch(["building", "building"])
    two_parts = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 0, 3, 1)])
    geometry = np.array([batch.geometry[0], two_parts], dtype=object)

    with GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=False) as out:
        out.add(ObjectBatch(**{**vars(batch), "geometry": geometry}))
        out.finish(RUN)

    written = gpd.read_file(path, layer="building").geometry
    assert written.geom_type.tolist() == ["MultiPolygon", "MultiPolygon"]
    assert written.iloc[0].equals(batch.geometry[0])
    assert written.iloc[1].equals(two_parts)


def test_nothing_appears_until_finish(tmp_path: Path) -> None:
    path = tmp_path / "objects.gpkg"

    with GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=False) as out:
        out.add(make_batch(["building"]))
        assert not path.exists()
        hidden = [name for name in os.listdir(tmp_path) if name != "objects.gpkg"]
        assert len(hidden) == 1
        assert hidden[0].startswith(".")
        assert hidden[0].endswith(".gpkg")
        out.finish(RUN)

    assert sorted(os.listdir(tmp_path)) == ["objects.gpkg"]


def test_existing_output_is_refused_without_overwrite_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "objects.gpkg"
    path.write_bytes(b"precious")

    with pytest.raises(OutputError, match=r"objects\.gpkg already exists; pass --overwrite"):
        GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=False)

    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["objects.gpkg"]


def test_message_names_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("objects.gpkg").touch()

    with pytest.raises(OutputError) as caught:
        check_output(Path("objects.gpkg"), overwrite=False)

    assert str(caught.value) == "objects.gpkg already exists; pass --overwrite to replace it"


def test_overwrite_replaces_the_output_only_at_finish(tmp_path: Path) -> None:
    path = tmp_path / "objects.gpkg"
    path.write_bytes(b"old")

    with GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=True) as out:
        out.add(make_batch(["building"]))
        assert path.read_bytes() == b"old"
        out.finish(RUN)

    assert len(gpd.read_file(path, layer="building")) == 1


def test_an_error_in_the_block_removes_the_temp_file_and_keeps_the_old_output(
    tmp_path: Path,
) -> None:
    path = tmp_path / "objects.gpkg"
    path.write_bytes(b"old")

    def run_that_fails() -> None:
        with GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=True) as out:
            out.add(make_batch(["building"]))
            raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        run_that_fails()

    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["objects.gpkg"]


def test_leaving_without_finish_writes_nothing(tmp_path: Path) -> None:
    with GeoPackageWriter(tmp_path / "objects.gpkg", CRS_WKT, CLASSES, overwrite=False) as out:
        out.add(make_batch(["building"]))

    assert os.listdir(tmp_path) == []


def test_output_that_appears_during_the_run_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "objects.gpkg"

    with GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=False) as out:
        path.write_bytes(b"someone else's")
        with pytest.raises(OutputError, match="already exists"):
            out.finish(RUN)

    assert path.read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["objects.gpkg"]


def test_missing_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "nowhere"

    with pytest.raises(OutputError, match=f"{folder} does not exist"):
        GeoPackageWriter(folder / "objects.gpkg", CRS_WKT, CLASSES, overwrite=False)


def test_read_only_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Permission bits do not stop root, who runs the CI containers: ask os.access instead.
    folder = tmp_path / "locked"
    folder.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != folder)

    with pytest.raises(OutputError, match=f"{folder} is not writable"):
        GeoPackageWriter(folder / "objects.gpkg", CRS_WKT, CLASSES, overwrite=False)


def test_a_folder_as_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a folder"):
        GeoPackageWriter(tmp_path, CRS_WKT, CLASSES, overwrite=True)


def test_write_failures_become_output_errors_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "objects.gpkg"

    def disk_full(*args: object, **kwargs: object) -> None:
        raise pyogrio.errors.DataSourceError("No space left on device")

    with GeoPackageWriter(path, CRS_WKT, CLASSES, overwrite=False) as out:
        monkeypatch.setattr(pyogrio.raw, "write", disk_full)
        with pytest.raises(OutputError, match=f"cannot write {path}: No space left"):
            out.add(make_batch(["building"]))
        assert os.listdir(tmp_path) == []

    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("names", "bad"),
    [
        (["building", "summary"], "summary"),
        (["Run"], "Run"),
        (["gpkg_contents"], "gpkg_contents"),
        (["rtree_building_geom"], "rtree_building_geom"),
        (["building", "Building"], "Building"),
        ([""], ""),
        (["trees/shrubs"], "trees/shrubs"),
        (["building "], "building "),
        (['say "hi"'], 'say "hi"'),
        (["x" * 65], "x" * 65),
    ],
)
def test_unusable_class_names_are_refused(tmp_path: Path, names: list[str], bad: str) -> None:
    with pytest.raises(OptionsError, match=f"class name {bad!r}"):
        GeoPackageWriter(tmp_path / "o.gpkg", CRS_WKT, names, overwrite=False)


def test_unicode_and_spaced_class_names_are_layer_names(tmp_path: Path) -> None:
    path = tmp_path / "objects.gpkg"
    names = ["bâtiment", "tree crown", "solar-panel.v2"]

    with GeoPackageWriter(path, CRS_WKT, names, overwrite=False) as out:
        out.add(make_batch(["bâtiment"]))
        out.finish(RUN)

    assert pyogrio.list_layers(path)[:3, 0].tolist() == names
    assert gpd.read_file(path, layer="bâtiment")["class_name"].tolist() == ["bâtiment"]


def test_no_classes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="no classes"):
        GeoPackageWriter(tmp_path / "o.gpkg", CRS_WKT, [], overwrite=False)


def test_batch_columns_must_have_equal_lengths() -> None:
    batch = make_batch(["building", "building"])

    with pytest.raises(ValueError, match="differ in length"):
        ObjectBatch(**{**vars(batch), "score": np.array([0.5])})
    with pytest.raises(ValueError, match="1-D numpy array"):
        ObjectBatch(**{**vars(batch), "source": ["a.tif", "a.tif"]})


def test_unknown_classes_and_non_polygons_are_refused(tmp_path: Path) -> None:
    batch = make_batch(["building"])

    with GeoPackageWriter(tmp_path / "o.gpkg", CRS_WKT, CLASSES, overwrite=False) as out:
        with pytest.raises(ValueError, match="unknown class names"):
            out.add(make_batch(["car"]))
        with pytest.raises(ValueError, match="Polygons"):
            out.add(ObjectBatch(**{**vars(batch), "geometry": np.array([shapely.Point(0, 0)])}))


def test_use_outside_a_with_block_is_a_bug(tmp_path: Path) -> None:
    out = GeoPackageWriter(tmp_path / "o.gpkg", CRS_WKT, CLASSES, overwrite=False)

    with pytest.raises(RuntimeError, match="not open"):
        out.add(make_batch(["building"]))
    with out:
        out.finish(RUN)
    with pytest.raises(RuntimeError, match="not open"):
        out.finish(RUN)
