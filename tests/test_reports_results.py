"""Reading geoseg outputs back: the objects as written, and refusal of anything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import pytest
import shapely

from geoseg.reports.results import GeoPackageError, read_results
from tests.report_inputs import not_geoseg_outputs
from tests.reports_data import CLASSES, KNOWN, OUTPUT_CRS, write_output


def test_read_results_returns_every_object_with_its_columns(make_raster, tmp_path: Path) -> None:
    output = write_output(tmp_path, make_raster)
    results = read_results(output.gpkg)
    assert results.class_names == CLASSES
    assert results.sources == (output.sources["a"], output.sources["b"])
    assert pyproj.CRS(results.crs_wkt) == pyproj.CRS(OUTPUT_CRS)
    assert results.run == {"geoseg_version": "0.1.0-test", "output_crs": OUTPUT_CRS}
    # layers come back class by class: lawns first (a, a, a, b), then the building
    order = [0, 1, 2, 4, 3]
    assert results.objects.area_m2.tolist() == [KNOWN[i].area_m2 for i in order]
    assert results.objects.class_name.tolist() == [KNOWN[i].class_name for i in order]
    assert set(shapely.get_type_id(results.objects.geometry).tolist()) == {6}
    assert np.all(shapely.is_valid(results.objects.geometry))


@pytest.mark.parametrize("case", ["missing", "folder", "text", "other gpkg", "geojson"])
def test_read_results_refuses_what_is_not_a_geoseg_output(tmp_path: Path, case: str) -> None:
    path, expected = not_geoseg_outputs(tmp_path)[case]
    with pytest.raises(GeoPackageError, match=expected) as caught:
        read_results(path)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)
