"""``geoseg zones`` through the CLI: outputs read back, and one-line errors with exit status 2."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from geoseg.cli.main import cli
from tests.report_inputs import not_geoseg_outputs
from tests.zones_data import X0, Y0, square, write_objects, write_zone_file

GROUND = 1 / 0.9996**2  # ground m² per map m² on UTM 32N's central meridian


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A 10 m lawn square straddling two parcels given in WGS 84 (GeoJSON)."""
    gpkg = write_objects(tmp_path / "objects.gpkg", [("lawn", square(5, 0))])
    parcels = [
        shapely.box(X0, Y0 - 5, X0 + 10, Y0 + 15),
        shapely.box(X0 + 10, Y0 - 5, X0 + 20, Y0 + 15),
    ]
    zones = write_zone_file(tmp_path / "parcels.geojson", ["A-1", "A-2"], parcels, crs="EPSG:4326")
    return gpkg, zones


def test_csv_on_stdout_splits_the_straddling_lawn(files: tuple[Path, Path]) -> None:
    code, out, err = invoke("zones", *files, "--by", "parcel_id")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["parcel_id"] for row in rows] == ["A-1", "A-2"]
    areas = [float(row["lawn_area_m2"]) for row in rows]
    assert areas == pytest.approx([50 * GROUND, 50 * GROUND], rel=1e-4)
    assert sum(int(row["lawn_count"]) for row in rows) == 1
    assert [row["building_count"] for row in rows] == ["0", "0"]


def test_geopackage_output_keeps_the_zones(files: tuple[Path, Path], tmp_path: Path) -> None:
    target = tmp_path / "zones.gpkg"
    code, out, err = invoke("zones", *files, "--by", "parcel_id", "-o", target)
    assert code == 0, err
    assert out == f"Wrote 2 zone(s) to {target}\n"
    frame = pyogrio.read_dataframe(target, layer="zones")
    assert frame["parcel_id"].tolist() == ["A-1", "A-2"]
    assert frame.crs.to_epsg() == 4326
    assert frame["zone_area_m2"].iloc[0] == pytest.approx(200 * GROUND, rel=1e-4)
    code, _, err = invoke("zones", *files, "--by", "parcel_id", "-o", target)
    assert (code, err.strip()) == (
        2,
        f"Error: {target} already exists; pass --overwrite to replace it",
    )
    assert invoke("zones", *files, "--by", "parcel_id", "-o", target, "--overwrite")[0] == 0


def test_bad_input_is_one_line_and_exit_2(files: tuple[Path, Path], tmp_path: Path) -> None:
    gpkg, zones = files
    cases = [
        (("zones", gpkg, zones, "--by", "owner"), "has no column 'owner' for --by"),
        (("zones", gpkg, tmp_path / "nope.gpkg", "--by", "id"), "nope.gpkg does not exist"),
        (("zones", gpkg, zones, "--by", "parcel_id", "-o", tmp_path / "z.txt"), ".gpkg or a .csv"),
    ]
    other, message = not_geoseg_outputs(tmp_path)["other gpkg"]
    cases.append((("zones", other, zones, "--by", "parcel_id"), message))
    for args, expected in cases:
        code, out, err = invoke(*args)
        assert code == 2
        assert out == ""
        assert len(err.splitlines()) == 1
        assert err.startswith("Error: ")
        assert expected in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
