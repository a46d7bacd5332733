"""End to end through a real Prefect flow run on a real Dask cluster, with a ground-truth model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS, Geod

from geoseg import run
from geoseg.errors import ModelError
from geoseg.flows.segment import RunResult, batches
from geoseg.tasks.tiling import plan_tiles
from tests.oracle_model import write_oracle_model
from tests.scenes import NODATA, expected_ids, objects_of, scene_bands

pytestmark = pytest.mark.e2e

CLASSES = {1: "lawn", 2: "bridge", 3: "building"}

# (crs, transform): UTM near the equator, geographic and Web Mercator near 60°N, where planar
# Web Mercator areas are about 4 times too large.
GRIDS = {
    "utm": ("EPSG:32636", Affine(0.5, 0, 450_000, 0, -0.5, 40_000)),
    "wgs84": ("EPSG:4326", Affine(5e-6, 0, 10.75, 0, -5e-6, 59.95)),
    "webmercator": ("EPSG:3857", Affine(0.5, 0, 1_196_000, 0, -0.5, 8_380_000)),
}


def ground_pixel_area_m2(crs: str, transform: Affine, rows: np.ndarray) -> np.ndarray:
    """Ground area of a pixel in each row, from textbook formulas (not the code under test)."""
    ellipsoid = Geod(ellps="WGS84")
    a, f = ellipsoid.a, ellipsoid.f
    e2 = f * (2 - f)
    if crs == "EPSG:32636":
        return np.full(len(rows), transform.a * -transform.e / 0.9996**2)
    if crs == "EPSG:4326":
        lat = np.radians(transform.f + (rows + 0.5) * transform.e)
    else:  # spherical Mercator: latitude from y
        y = transform.f + (rows + 0.5) * transform.e
        lat = np.arctan(np.sinh(y / a))
    sin2 = np.sin(lat) ** 2
    meridian = a * (1 - e2) / (1 - e2 * sin2) ** 1.5
    normal = a / np.sqrt(1 - e2 * sin2)
    if crs == "EPSG:4326":
        return meridian * normal * np.cos(lat) * np.radians(transform.a) * np.radians(-transform.e)
    return meridian * normal * np.cos(lat) ** 2 / a**2 * transform.a * -transform.e


def expected_objects(crs: str, transform: Affine) -> dict[int, tuple[shapely.Geometry, float]]:
    """Ideal polygon in the CRS and ground area per truth id."""
    ids = expected_ids()
    result = {}
    for object_id in np.unique(ids[ids > 0]).tolist():
        mask = ids == object_id
        shapes = rasterio.features.shapes(mask.astype(np.uint8), mask=mask, transform=transform)
        polygon = shapely.union_all([shapely.geometry.shape(s) for s, _ in shapes])
        rows = np.nonzero(mask)[0]
        area = ground_pixel_area_m2(crs, transform, rows).sum()
        result[object_id] = (polygon, float(area))
    return result


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_oracle_model(tmp_path_factory.mktemp("model") / "oracle.pt", CLASSES)


def read_objects(path: Path) -> dict[str, list[tuple[str, shapely.Geometry, float, str]]]:
    layers = {}
    for name in CLASSES.values():
        meta, _, geoms, fields = pyogrio.raw.read(path, layer=name)
        columns = dict(zip(meta["fields"], fields, strict=True))
        layers[name] = [
            (oid, shapely.from_wkb(g), area, cls)
            for oid, g, area, cls in zip(
                columns["object_id"], geoms, columns["area_m2"], columns["class_name"], strict=True
            )
        ]
    return layers


def check_against_truth(path: Path, crs: str, transform: Affine) -> None:
    expected = expected_objects(crs, transform)
    layers = read_objects(path)
    found = [row for rows in layers.values() for row in rows]
    assert len(found) == len(expected)
    for object_id, (ideal, area) in expected.items():
        layer = CLASSES[object_id // 1000]
        matches = [row for row in layers[layer] if row[1].intersects(ideal.representative_point())]
        assert len(matches) == 1, f"object {object_id}: {len(matches)} matches"
        _, geometry, area_m2, class_name = matches[0]
        assert geometry.is_valid
        assert class_name == layer
        iou = geometry.intersection(ideal).area / geometry.union(ideal).area
        assert iou >= 0.9999, f"object {object_id}: IoU {iou}"
        assert area_m2 == pytest.approx(area, rel=0.005), f"object {object_id}"


@pytest.mark.parametrize("grid", list(GRIDS))
def test_objects_come_out_exactly_once_with_true_areas(
    grid: str, make_raster, oracle: Path, dask_address: str, tmp_path: Path
) -> None:
    crs, transform = GRIDS[grid]
    scene = make_raster(scene_bands(), crs=crs, transform=transform, nodata=NODATA)
    result = run(
        [scene],
        tmp_path / "objects.gpkg",
        model=oracle,
        tile_size=256,
        overlap_px=32,
        dask_address=dask_address,
    )
    check_against_truth(result.output, crs, transform)
    summary = {(row.class_name, row.count) for row in result.summary}
    assert summary == {("lawn", 4), ("bridge", 1), ("building", 3)}


def test_same_objects_for_every_tiling_and_worker_count(
    make_raster, oracle: Path, dask_address: str, tmp_path: Path
) -> None:
    crs, transform = GRIDS["utm"]
    scene = make_raster(scene_bands(), crs=crs, transform=transform, nodata=NODATA)
    outputs = []
    for tile_size, overlap, workers in [(512, 64, 1), (256, 32, None), (300, 100, None)]:
        out = tmp_path / f"objects-{tile_size}-{workers}.gpkg"
        address = None if workers else dask_address
        run(
            [scene],
            out,
            model=oracle,
            tile_size=tile_size,
            overlap_px=overlap,
            workers=workers,
            dask_address=address,
            batch_size=3,
        )
        check_against_truth(out, crs, transform)
        outputs.append(
            sorted(
                (oid, round(area, 6))
                for rows in read_objects(out).values()
                for oid, _, area, _ in rows
            )
        )
    assert outputs[0] == outputs[1] == outputs[2]


def test_run_table_and_summary_describe_the_run(
    make_raster, oracle: Path, dask_address: str, tmp_path: Path
) -> None:
    crs, transform = GRIDS["utm"]
    scene = make_raster(scene_bands(), crs=crs, transform=transform, nodata=NODATA)
    empty = make_raster(
        np.zeros((2, 40, 40), dtype=np.uint16), name="empty.tif", crs=crs, transform=transform
    )
    result: RunResult = run(
        [scene, empty],
        tmp_path / "objects.gpkg",
        model=oracle,
        dask_address=dask_address,
        min_area_m2=1000.0,
    )
    run_table = pyogrio.read_dataframe(result.output, layer="run")
    assert run_table.loc[0, "tile_size"] == 512
    assert run_table.loc[0, "min_area_m2"] == 1000.0
    assert len(run_table.loc[0, "model_sha256"]) == 64
    assert "geodesic" in run_table.loc[0, "area_method"]
    summary = pyogrio.read_dataframe(result.output, layer="summary")
    assert set(summary["source"]) == {str(scene), str(empty)}
    assert summary.loc[summary["source"] == str(empty), "count"].sum() == 0
    # lawn 1001 (60 x 62 px of 0.25 m², 930 m²) is dropped, the other three lawns stay
    lawns = pyogrio.read_dataframe(result.output, layer="lawn")
    assert len(lawns) == 3
    assert (lawns["area_m2"] >= 1000).all()
    assert (
        str(CRS.from_user_input(pyogrio.read_info(result.output, layer="lawn")["crs"]).to_epsg())
        == "32636"
    )


def test_no_detection_still_writes_every_layer(
    make_raster, oracle: Path, dask_address: str, tmp_path: Path
) -> None:
    scene = make_raster(np.zeros((2, 50, 70), dtype=np.uint16))
    result = run([scene], tmp_path / "none.gpkg", model=oracle, dask_address=dask_address)
    assert result.objects == 0
    layers = dict(pyogrio.list_layers(result.output))
    assert {"lawn", "bridge", "building", "summary", "run"} <= set(layers)
    assert pyogrio.read_info(result.output, layer="building")["features"] == 0


def test_the_run_table_config_repeats_the_run(
    make_raster, oracle: Path, dask_address: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    scene = make_raster(scene_bands(), nodata=NODATA)
    first = run(
        [scene],
        tmp_path / "first.gpkg",
        model=oracle,
        tile_size=200,
        overlap_px=20,
        dask_address=dask_address,
        min_area_m2=1000.0,
    )
    run_file = tmp_path / "run.json"
    run_file.write_text(pyogrio.read_dataframe(first.output, layer="run").loc[0, "config"])
    again = tmp_path / "again.gpkg"
    result = CliRunner().invoke(cli, ["run", "--config", str(run_file), "-o", str(again)])
    assert result.exit_code == 0, result.output
    assert read_objects(again) == read_objects(first.output)


def test_output_crs_can_be_chosen_and_areas_stay_those_of_the_source_crs(
    make_raster, oracle: Path, dask_address: str, tmp_path: Path
) -> None:
    crs, transform = GRIDS["utm"]
    scene = make_raster(scene_bands(), crs=crs, transform=transform, nodata=NODATA)
    result = run(
        [scene], tmp_path / "wgs84.gpkg", model=oracle, dask_address=dask_address, crs="EPSG:4326"
    )
    info = pyogrio.read_info(result.output, layer="bridge")
    assert CRS.from_user_input(info["crs"]).to_epsg() == 4326
    (bridge,) = read_objects(result.output)["bridge"]
    lon, lat = bridge[1].centroid.x, bridge[1].centroid.y
    assert 32 < lon < 33  # UTM 36N, 50 km west of its central meridian
    assert 0 < lat < 1  # and 40 km north of the equator
    assert bridge[2] == pytest.approx(expected_objects(crs, transform)[2001][1], rel=0.005)


def test_a_model_at_another_ground_resolution_sees_resampled_tiles_and_objects_stay_exact(
    make_raster, tmp_path: Path, dask_address: str
) -> None:
    # The scene at 0.5 m; a model that wants 1 m reads every 2 x 2 block as one pixel. The truth
    # ids cover whole blocks (the bridge is widened to even columns), so averaging keeps them.
    bands = scene_bands()
    bands[1][400:412, 4:696] = 2001
    crs, transform = GRIDS["utm"]
    scene = make_raster(bands, crs=crs, transform=transform, nodata=NODATA)
    coarse = write_oracle_model(tmp_path / "coarse.pt", CLASSES, gsd_m=1.0, tta=True)
    options = {"tile_size": 256, "overlap_px": 32, "dask_address": dask_address}

    run([scene], tmp_path / "resampled.gpkg", model=coarse, tta=True, **options)
    run([scene], tmp_path / "native.gpkg", model=coarse, gsd_m=0.5, **options)

    assert objects_of(tmp_path / "resampled.gpkg") == objects_of(tmp_path / "native.gpkg")
    assert len(objects_of(tmp_path / "native.gpkg")) == 8
    record = pyogrio.read_dataframe(tmp_path / "resampled.gpkg", layer="run").iloc[0]
    assert (record["gsd_m"], record["tta"], record["tile_size"]) == (1.0, 1, 256)
    assert '"tta": true' in record["config"]


def test_tta_is_refused_up_front_for_a_model_without_it(
    make_raster, oracle: Path, tmp_path: Path
) -> None:
    scene = make_raster(scene_bands(), nodata=NODATA)

    with pytest.raises(ModelError, match="has no test-time augmentation"):
        run([scene], tmp_path / "tta.gpkg", model=oracle, tta=True)

    assert not (tmp_path / "tta.gpkg").exists()


@pytest.mark.parametrize(
    ("tiles", "batch_size", "task_sizes"),
    [
        (5, 8, [5]),
        (100, 8, [8] * 12 + [4]),  # 13 model batches: one per task
        # 67 model batches: up to 4 per task (at least 16 tasks), a quarter of what is left
        (529, 8, [32] * 13 + [24, 24, 16] + [8] * 6 + [1]),
        (1369, 8, [64] * 18 + [56, 40, 32, 24, 16] + [8] * 6 + [1]),  # at most 8 per task
        (1369, 2, [16] * 82 + [14, 10, 8, 6, 4, 4, 2, 2, 2, 2, 2, 1]),
    ],
)
def test_batch_tasks_hold_whole_model_batches_more_of_them_on_big_rasters(
    tiles: int, batch_size: int, task_sizes: list[int]
) -> None:
    plan = plan_tiles(15 * tiles + 1, 16, 16, 1)
    groups = batches(plan, batch_size)
    assert [len(group) for group in groups] == task_sizes
    assert [tile for group in groups for tile in group] == list(plan)
