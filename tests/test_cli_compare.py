"""``geoseg compare`` through the CLI: the table, output files, zones and one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from geoseg.cli.main import cli
from tests.report_inputs import not_geoseg_outputs
from tests.zones_data import X0, Y0, write_two_dates, write_zone_file


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def dates(tmp_path: Path) -> tuple[Path, Path]:
    return write_two_dates(tmp_path)


def test_table_by_default(dates: tuple[Path, Path]) -> None:
    code, out, err = invoke("compare", *dates)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:6] == ["lawn", "3", "3", "1", "2", "2"]
    assert lines[2].split()[:6] == ["building", "1", "1", "1", "0", "0"]
    assert len({len(line) for line in lines[:3]}) == 1
    assert lines[-1] == "(objects matched at IoU ≥ 0.5)"


def test_iou_option_and_json(dates: tuple[Path, Path]) -> None:
    code, out, _ = invoke("compare", *dates, "--iou", "0.2", "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["iou_threshold"] == 0.2
    assert document["classes"][0]["persisted"] == 2


def test_zones_csv_and_gpkg_files(dates: tuple[Path, Path], tmp_path: Path) -> None:
    west = shapely.box(X0 - 5, Y0 - 5, X0 + 150, Y0 + 15)
    east = shapely.box(X0 + 150, Y0 - 5, X0 + 400, Y0 + 15)
    zones = write_zone_file(tmp_path / "z.geojson", ["west", "east"], [west, east], crs="EPSG:4326")
    target = tmp_path / "zones.csv"
    code, out, err = invoke("compare", *dates, "--zones", zones, "--by", "parcel_id", "-o", target)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(r["zone"], r["class_name"]) for r in rows][:2] == [
        ("west", "lawn"),
        ("west", "building"),
    ]
    assert float(rows[0]["change_m2"]) < 0 < float(rows[2]["change_m2"])
    gpkg = tmp_path / "changes.gpkg"
    code, out, err = invoke("compare", *dates, "--zones", zones, "--by", "parcel_id", "-o", gpkg)
    assert code == 0, err
    assert out == f"Wrote the changes of 6 objects to {gpkg}\n"
    assert [name for name, _ in pyogrio.list_layers(gpkg)] == ["changes", "classes", "zones"]


def test_bad_input_is_one_line_and_exit_2(dates: tuple[Path, Path], tmp_path: Path) -> None:
    other, message = not_geoseg_outputs(tmp_path)["other gpkg"]
    existing = tmp_path / "keep.csv"
    existing.write_text("keep")
    cases = [
        (("compare", dates[0], other), message),
        (("compare", dates[0], tmp_path / "gone.gpkg"), "gone.gpkg does not exist"),
        (("compare", *dates, "--zones", dates[0]), "--zones and --by go together"),
        (("compare", *dates, "--iou", "1.5"), "--iou must be in (0, 1]"),
        (("compare", *dates, "-o", tmp_path / "c.txt"), ".gpkg, .csv or .json"),
        (("compare", *dates, "-o", existing), "already exists; pass --overwrite"),
    ]
    for args, expected in cases:
        code, out, err = invoke(*args)
        assert code == 2, args
        assert out == ""
        assert len(err.splitlines()) == 1
        assert err.startswith("Error: ")
        assert expected in err
    assert existing.read_text() == "keep"
