"""``geoseg export`` through the CLI: every format, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyogrio
import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from tests.report_inputs import not_geoseg_outputs
from tests.reports_data import Output, write_output


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def output(make_raster, tmp_path: Path) -> Output:
    return write_output(tmp_path, make_raster)


def test_export_coco(output: Output, tmp_path: Path) -> None:
    target = tmp_path / "coco.json"
    code, out, err = invoke("export", output.gpkg, "--to", "coco", "-o", target)
    assert code == 0, err
    assert out == f"Wrote 5 objects to {target}\n"
    dataset = json.loads(target.read_text())
    assert len(dataset["annotations"]) == 5
    assert dataset["annotations"][0]["segmentation"] == [[6, 3, 6, 7, 2, 7, 2, 3]]


def test_export_geojson(output: Output, tmp_path: Path) -> None:
    target = tmp_path / "objects.geojson"
    code, _, err = invoke("export", output.gpkg, "--to", "geojson", "-o", target)
    assert code == 0, err
    info = pyogrio.read_info(target)
    assert info["features"] == 5
    assert info["crs"] == "EPSG:4326"


def test_export_shapefiles_into_a_new_folder(output: Output, tmp_path: Path) -> None:
    folder = tmp_path / "shp"
    code, _, err = invoke("export", output.gpkg, "--to", "shapefile", "-o", folder)
    assert code == 0, err
    assert pyogrio.read_info(folder / "lawn.shp")["features"] == 4
    assert list(pyogrio.read_info(folder / "building.shp")["fields"]) == [
        "object_id", "class", "score", "area_m2", "perim_m", "source",
    ]  # fmt: skip


def test_export_help_documents_the_shapefile_field_names() -> None:
    code, out, _ = invoke("export", "--help")
    assert code == 0
    assert "perim_m (perimeter_m)" in out
    assert "class (class_name)" in out


def test_export_geoparquet(output: Output, tmp_path: Path) -> None:
    geopandas = pytest.importorskip("geopandas")
    pytest.importorskip("pyarrow")
    target = tmp_path / "objects.parquet"
    code, _, err = invoke("export", output.gpkg, "--to", "geoparquet", "-o", target)
    assert code == 0, err
    assert len(geopandas.read_parquet(target)) == 5


def test_export_geoparquet_without_pyarrow_is_one_line(
    output: Output, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code, _, err = invoke("export", output.gpkg, "--to", "geoparquet", "-o", tmp_path / "o.pq")
    assert code == 2
    assert err == (
        "Error: --to geoparquet needs pyarrow, which is not installed; "
        "pip install 'geoseg[geoparquet]'\n"
    )


def test_export_coco_without_the_source_raster_is_one_line(output: Output, tmp_path: Path) -> None:
    output.rasters["a"].unlink()
    target = tmp_path / "coco.json"
    code, _, err = invoke("export", output.gpkg, "--to", "coco", "-o", target)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert f"source raster {output.sources['a']} of {output.gpkg} does not exist" in err
    assert not target.exists()


def test_export_refuses_an_existing_output(output: Output, tmp_path: Path) -> None:
    target = tmp_path / "objects.geojson"
    target.write_text("keep me")
    code, _, err = invoke("export", output.gpkg, "--to", "geojson", "-o", target)
    assert (code, err) == (2, f"Error: {target} already exists; pass --overwrite to replace it\n")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("case", ["missing", "folder", "text", "other gpkg", "geojson"])
def test_export_of_bad_input_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    path, expected = not_geoseg_outputs(tmp_path)[case]
    code, out, err = invoke("export", path, "--to", "geojson", "-o", tmp_path / "out.geojson")
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("Error: ")
    assert expected in err
    assert not (tmp_path / "out.geojson").exists()
