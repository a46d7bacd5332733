"""The HTML report: self-contained, with the summary, the picture and the run; text escaped."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import shapely

from geoseg.reports.html import render_report
from geoseg.reports.quicklook import make_quicklook
from geoseg.reports.results import read_results
from geoseg.reports.summary import summarize
from tests.quicklook_data import two_tone, write_gpkg, write_scene

pytest.importorskip("matplotlib")


@pytest.fixture
def scene(make_raster, tmp_path: Path) -> tuple[Path, Path]:
    return write_scene(make_raster, tmp_path)


def test_html_report_is_self_contained(scene: tuple[Path, Path]) -> None:
    raster, gpkg = scene
    results = read_results(gpkg)
    quicklook = make_quicklook(results, str(raster), 400)
    page = render_report(results, quicklook, summarize(results))
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded is not None
    assert base64.b64decode(embedded.group(1)) == quicklook.png
    row = r'<td class="source">{}</td><td class="class">.*lawn</td><td class="n">{}</td>'
    assert re.search(row.format(re.escape(str(raster)), 1), page)
    assert re.search(row.format("all sources", 2), page)
    assert "<svg" in page
    assert "&quot;tile_size&quot;: 512" in page
    for external in ("<script", "<link", 'src="http', "url("):
        assert external not in page


def test_html_report_escapes_hostile_names(make_raster, tmp_path: Path) -> None:
    hostile = "<img src=x onerror=alert(1)>.tif"
    raster = two_tone(make_raster, hostile)
    gpkg = write_gpkg(
        tmp_path / "o.gpkg", [(shapely.box(1, 1, 9, 9), "lawn", str(raster))], [str(raster)]
    )
    results = read_results(gpkg)
    page = render_report(results, make_quicklook(results, str(raster), 400), summarize(results))
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.tif" in page
