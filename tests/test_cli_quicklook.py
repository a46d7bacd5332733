"""``geoseg quicklook`` through the CLI: the files it writes, and one-line errors with status 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from tests.reports_data import Output, write_output

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def output(make_raster, tmp_path: Path) -> Output:
    return write_output(tmp_path, make_raster)


def test_quicklook_writes_the_picture_and_the_report(output: Output, tmp_path: Path) -> None:
    png, html = tmp_path / "a.png", tmp_path / "a.html"
    raster = output.rasters["a"]
    code, out, err = invoke(
        "quicklook", output.gpkg, raster, "-o", png, "--html", html, "--max-size", "500"
    )
    assert code == 0, err
    assert out == f"Wrote {png} and {html}: 500 x 463 px, 4 objects of {raster}\n"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "data:image/png;base64," in page
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".png", ".html")) == [
        "a.html",
        "a.png",
    ]  # no temporary file left behind


def test_quicklook_writes_only_the_report(output: Output, tmp_path: Path) -> None:
    html = tmp_path / "b.html"
    code, out, err = invoke("quicklook", output.gpkg, output.rasters["b"], "--html", html)
    assert code == 0, err
    assert out == f"Wrote {html}: 1600 x 866 px, 1 object of {output.rasters['b']}\n"
    assert "data:image/png;base64," in html.read_text(encoding="utf-8")
    assert not list(tmp_path.glob("*.png"))


def test_quicklook_refuses_to_replace_without_overwrite(output: Output, tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"keep")
    code, _, err = invoke("quicklook", output.gpkg, output.rasters["a"], "-o", png)
    assert code == 2
    assert err == f"Error: {png} already exists; pass --overwrite to replace it\n"
    assert png.read_bytes() == b"keep"
    code, _, err = invoke("quicklook", output.gpkg, output.rasters["a"], "-o", png, "--overwrite")
    assert code == 0, err
    assert png.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("missing", ["raster", "geopackage", "source"])
def test_bad_input_is_one_line_and_writes_nothing(
    output: Output, tmp_path: Path, make_raster, missing: str
) -> None:
    gpkg, raster = output.gpkg, output.rasters["a"]
    expected = ""
    if missing == "raster":
        raster = tmp_path / "absent.tif"
        expected = f"{raster} does not exist"
    elif missing == "geopackage":
        gpkg = tmp_path / "absent.gpkg"
        expected = f"{gpkg} does not exist"
    else:
        raster = output.rasters["a"].with_name("c.tif")
        raster.write_bytes(output.rasters["a"].read_bytes())
        expected = f"{raster} is not a source of {output.gpkg}"
    png, html = tmp_path / "q.png", tmp_path / "q.html"
    code, out, err = invoke("quicklook", gpkg, raster, "-o", png, "--html", html)
    assert code == 2
    assert out == ""
    assert err.startswith(f"Error: {expected}")
    assert err.count("\n") == 1
    assert not png.exists()
    assert not html.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Error: quicklook needs -o PICTURE.png, --html REPORT.html or both\n"),
        (("-o", "p.png", "--max-size", "100"), "Error: --max-size 100 is too small"),
        (("-o", "same.x", "--html", "same.x"), "Error: -o and --html are both same.x"),
    ],
)
def test_bad_options_are_one_line(output: Output, args: tuple[str, ...], message: str) -> None:
    code, _, err = invoke("quicklook", output.gpkg, output.rasters["a"], *args)
    assert code == 2
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_without_matplotlib_the_error_names_the_extra(
    output: Output, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    png = tmp_path / "q.png"
    code, _, err = invoke("quicklook", output.gpkg, output.rasters["a"], "-o", png)
    assert code == 2
    assert err == (
        "Error: quicklook needs matplotlib, which is not installed; pip install 'geoseg[viz]'\n"
    )
    assert not png.exists()
