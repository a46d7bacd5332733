"""``geoseg summary`` through the CLI: formats, output files and one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from tests.report_inputs import not_geoseg_outputs
from tests.reports_data import write_output


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def gpkg(make_raster, tmp_path: Path) -> Path:
    return write_output(tmp_path, make_raster, relative_sources=True).gpkg


def test_summary_prints_an_aligned_table(gpkg: Path) -> None:
    code, out, err = invoke("summary", gpkg)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "source", "class", "count", "area", "m²", "area", "ha", "area", "km²", "mean", "m²",
        "median", "m²",
    ]  # fmt: skip
    assert lines[1].split() == ["a.tif", "lawn", "3", "90.0", "0.01", "0.0001", "30.0", "20.0"]
    assert lines[6].split() == ["all", "sources", "building", "1", "5.0", "0.00", "0.0000",
                                "5.0", "5.0"]  # fmt: skip
    assert len({len(line) for line in lines}) == 1


def test_summary_csv_to_stdout(gpkg: Path) -> None:
    code, out, _ = invoke("summary", gpkg, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["source"], r["class_name"], r["count"]) for r in rows][:2] == [
        ("a.tif", "lawn", "3"),
        ("a.tif", "building", "1"),
    ]
    assert float(rows[4]["median_area_m2"]) == 40.0


def test_summary_json_to_a_file_takes_the_format_from_the_suffix(
    gpkg: Path, tmp_path: Path
) -> None:
    target = tmp_path / "summary.json"
    code, out, _ = invoke("summary", gpkg, "-o", target)
    assert code == 0
    assert out == ""
    records = json.loads(target.read_text())
    assert records[2] == {
        "source": "b.tif",
        "class_name": "lawn",
        "count": 1,
        "total_area_m2": 100.0,
        "total_area_ha": 0.01,
        "total_area_km2": 0.0001,
        "mean_area_m2": 100.0,
        "median_area_m2": 100.0,
    }


def test_summary_refuses_to_replace_a_file_without_overwrite(gpkg: Path, tmp_path: Path) -> None:
    target = tmp_path / "summary.csv"
    target.write_text("keep me")
    code, _, err = invoke("summary", gpkg, "-o", target)
    assert code == 2
    assert err.strip() == f"Error: {target} already exists; pass --overwrite to replace it"
    assert target.read_text() == "keep me"
    assert invoke("summary", gpkg, "-o", target, "--overwrite")[0] == 0
    assert target.read_text().startswith("source,class_name,count,")


@pytest.mark.parametrize("case", ["missing", "folder", "text", "other gpkg", "geojson"])
def test_summary_of_bad_input_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    path, expected = not_geoseg_outputs(tmp_path)[case]
    code, out, err = invoke("summary", path)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("Error: ")
    assert expected in err
