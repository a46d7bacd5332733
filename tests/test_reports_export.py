"""Exports of a geoseg output: COCO in exact pixels, RFC 7946 GeoJSON, shapefiles, GeoParquet."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyogrio.raw
import pyproj
import pytest
import shapely
from rasterio.features import rasterize

from geoseg.errors import OutputError, RasterError
from geoseg.reports.export import (
    SHAPEFILE_FIELDS,
    MissingExtraError,
    coco_dataset,
    read_grids,
    write_coco,
    write_geojson,
    write_geoparquet,
    write_shapefiles,
)
from geoseg.reports.results import Results, read_results
from geoseg.tasks.write import OBJECT_FIELDS
from tests.reports_data import (
    A_TRANSFORM,
    B_CRS,
    B_TRANSFORM,
    KNOWN,
    OUTPUT_CRS,
    Output,
    write_output,
)
from tests.reports_data import Known as KnownObject


@pytest.fixture
def output(make_raster, tmp_path: Path) -> Output:
    return write_output(tmp_path, make_raster)


@pytest.fixture
def results(output: Output) -> Results:
    return read_results(output.gpkg)


def annotation_of(dataset: dict, index: int) -> dict:
    """The annotation of KNOWN[index], found by its object id."""
    object_id = f"{KNOWN[index].raster}.tif:{index}:0"
    (annotation,) = [a for a in dataset["annotations"] if a["object_id"] == object_id]
    return annotation


def exteriors(known: KnownObject) -> list[shapely.Polygon]:
    return [
        shapely.normalize(shapely.Polygon(part.exterior))
        for part in shapely.get_parts(known.pixels)
    ]


def test_coco_polygons_are_the_original_pixel_polygons_exactly(results: Results) -> None:
    dataset = coco_dataset(results, read_grids(results))
    for index, known in enumerate(KNOWN):
        annotation = annotation_of(dataset, index)
        rings = [
            shapely.normalize(shapely.Polygon(np.reshape(flat, (-1, 2))))
            for flat in annotation["segmentation"]
        ]
        # exact: every vertex, in raster a (same CRS) and b (reprojected from Web Mercator)
        assert len(rings) == len(exteriors(known))
        for ring, expected in zip(rings, exteriors(known), strict=True):
            assert ring.equals_exact(expected, tolerance=0), (index, ring, expected)
        x0, y0, x1, y1 = known.pixels.bounds
        assert annotation["bbox"] == [x0, y0, x1 - x0, y1 - y0]
        assert annotation["area"] == known.pixels.area  # holes subtracted
        assert annotation["score"] == known.score
        assert annotation["iscrowd"] == 0
        image = dataset["images"][annotation["image_id"] - 1]
        assert image["file_name"] == f"{known.raster}.tif"
        category = dataset["categories"][annotation["category_id"] - 1]
        assert category["name"] == known.class_name


def test_coco_images_and_categories(results: Results) -> None:
    dataset = coco_dataset(results, read_grids(results))
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in dataset["images"]] == [
        (1, "a.tif", 40, 30),
        (2, "b.tif", 20, 10),
    ]
    assert [(c["id"], c["name"]) for c in dataset["categories"]] == [(1, "lawn"), (2, "building")]
    assert annotation_of(dataset, 1)["area"] == 96  # a 10 x 10 lawn around a 2 x 2 hole
    assert len(annotation_of(dataset, 2)["segmentation"]) == 2  # one list per part


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
def test_coco_file_loads_in_pycocotools_with_the_original_masks(
    results: Results, tmp_path: Path
) -> None:
    coco_module = pytest.importorskip("pycocotools.coco")
    path = tmp_path / "coco.json"
    write_coco(results, path)
    coco = coco_module.COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2]
    assert len(coco.getAnnIds(imgIds=[1])) == 4
    for index, known in enumerate(KNOWN):
        annotation = annotation_of(coco.dataset, index)
        image = coco.imgs[annotation["image_id"]]
        filled = shapely.MultiPolygon(exteriors(known))  # COCO polygons carry no holes
        expected = rasterize([filled], out_shape=(image["height"], image["width"]), dtype=np.uint8)
        np.testing.assert_array_equal(coco.annToMask(annotation), expected)


def test_coco_finds_relative_sources_beside_the_geopackage(
    make_raster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = write_output(tmp_path, make_raster, relative_sources=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    results = read_results(output.gpkg)
    dataset = coco_dataset(results, read_grids(results))
    assert [image["geoseg_source"] for image in dataset["images"]] == ["a.tif", "b.tif"]


def test_coco_without_a_source_raster_names_it(output: Output, tmp_path: Path) -> None:
    output.rasters["b"].unlink()
    target = tmp_path / "coco.json"
    with pytest.raises(RasterError, match=r"source raster .*b\.tif .*does not exist") as caught:
        write_coco(read_results(output.gpkg), target)
    assert "\n" not in str(caught.value)
    assert not target.exists()


def test_geojson_is_rfc7946_lon_lat_with_counter_clockwise_exteriors(
    results: Results, tmp_path: Path
) -> None:
    path = tmp_path / "objects.geojson"
    write_geojson(results, path)
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    assert "crs" not in collection  # RFC 7946: WGS 84 only, no crs member
    features = collection["features"]
    assert sorted(f["properties"]["class_name"] for f in features) == [
        "building",
        "lawn",
        "lawn",
        "lawn",
        "lawn",
    ]
    to_lonlat = {
        raster: pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        for raster, crs in (("a", OUTPUT_CRS), ("b", B_CRS))
    }
    for index, known in enumerate(KNOWN):
        (feature,) = [
            f for f in features if f["properties"]["object_id"] == f"{known.raster}.tif:{index}:0"
        ]
        assert set(feature["properties"]) == set(OBJECT_FIELDS)
        geom = shapely.geometry.shape(feature["geometry"])
        for polygon in shapely.get_parts(geom):
            assert polygon.exterior.is_ccw
            assert all(not hole.is_ccw for hole in polygon.interiors)
        transform = A_TRANSFORM if known.raster == "a" else B_TRANSFORM
        in_crs = shapely.affinity.affine_transform(
            known.pixels, [transform.a, 0, 0, transform.e, transform.c, transform.f]
        )
        lonlat = shapely.transform(
            in_crs,
            lambda xy, t=to_lonlat[known.raster]: np.column_stack(t.transform(xy[:, 0], xy[:, 1])),
        )
        # longitude first (about 33°E), latitude second (about 0.36°N); 7 decimals kept
        assert 32.9 < geom.bounds[0] < 33.1
        assert 0.3 < geom.bounds[1] < 0.4
        assert shapely.hausdorff_distance(geom, lonlat) < 1e-7


def test_shapefiles_have_short_field_names_and_intact_values(
    results: Results, tmp_path: Path
) -> None:
    folder = tmp_path / "shapefiles"
    written = write_shapefiles(results, folder)
    assert written == [folder / "lawn.shp", folder / "building.shp"]
    assert all(len(name) <= 10 for name in SHAPEFILE_FIELDS.values())
    assert {p.suffix for p in folder.iterdir()} == {".shp", ".shx", ".dbf", ".prj", ".cpg"}
    meta, _, wkb, values = pyogrio.raw.read(folder / "lawn.shp")
    assert list(meta["fields"]) == ["object_id", "class", "score", "area_m2", "perim_m", "source"]
    assert pyproj.CRS(meta["crs"]) == pyproj.CRS(OUTPUT_CRS)
    lawns = results.rows_of("lawn")
    columns = dict(zip(meta["fields"], values, strict=True))
    assert columns["object_id"].tolist() == results.objects.object_id[lawns].tolist()
    assert columns["class"].tolist() == ["lawn"] * 4
    assert columns["score"].tolist() == results.objects.score[lawns].tolist()
    assert columns["area_m2"].tolist() == [10.0, 20.0, 60.0, 100.0]
    assert columns["perim_m"].tolist() == [12.5, 30.25, 14.0, 40.5]
    assert columns["source"].tolist() == results.objects.source[lawns].tolist()
    shapes = shapely.from_wkb(wkb)
    assert all(shapely.equals(shapes, results.objects.geometry[lawns]))
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_shapefiles_refuse_to_replace_without_overwrite(results: Results, tmp_path: Path) -> None:
    folder = tmp_path / "shapefiles"
    write_shapefiles(results, folder)
    with pytest.raises(OutputError, match=r"lawn\.shp already exists; pass --overwrite"):
        write_shapefiles(results, folder)
    write_shapefiles(results, folder, overwrite=True)
    assert pyogrio.read_info(folder / "building.shp")["features"] == 1


def test_geoparquet_keeps_columns_crs_and_geometries(results: Results, tmp_path: Path) -> None:
    geopandas = pytest.importorskip("geopandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "objects.parquet"
    write_geoparquet(results, path)
    frame = geopandas.read_parquet(path)
    assert list(frame.columns) == [*OBJECT_FIELDS, "geometry"]
    assert frame.crs == pyproj.CRS(OUTPUT_CRS)
    assert frame["area_m2"].tolist() == results.objects.area_m2.tolist()
    assert shapely.equals_exact(np.asarray(frame.geometry), results.objects.geometry, 0).all()


def test_geoparquet_without_pyarrow_says_which_extra_to_install(
    results: Results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    path = tmp_path / "objects.parquet"
    with pytest.raises(MissingExtraError, match=r"pip install 'geoseg\[geoparquet\]'"):
        write_geoparquet(results, path)
    assert not path.exists()


def test_exports_refuse_an_existing_file_without_overwrite(
    results: Results, tmp_path: Path
) -> None:
    path = tmp_path / "objects.geojson"
    path.write_text("keep me")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        write_geojson(results, path)
    assert path.read_text() == "keep me"
    write_geojson(results, path, overwrite=True)
    assert len(json.loads(path.read_text())["features"]) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
