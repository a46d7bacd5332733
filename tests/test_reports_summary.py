"""Per-source, per-class statistics: numbers computed by hand from tests.reports_data.KNOWN."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from geoseg.reports.results import read_results
from geoseg.reports.summary import (
    COLUMNS,
    AreaSummary,
    format_csv,
    format_json,
    format_summary,
    format_table,
    summarize,
    summarize_areas,
)
from tests.reports_data import write_output


@pytest.fixture
def rows(make_raster, tmp_path: Path) -> list[AreaSummary]:
    output = write_output(tmp_path, make_raster, relative_sources=True)
    return summarize(read_results(output.gpkg))


def test_summary_counts_totals_means_and_medians(rows: list[AreaSummary]) -> None:
    got = [
        (r.source, r.class_name, r.count, r.total_area_m2, r.mean_area_m2, r.median_area_m2)
        for r in rows
    ]
    assert got == [
        ("a.tif", "lawn", 3, 90.0, 30.0, 20.0),  # 10, 20, 60
        ("a.tif", "building", 1, 5.0, 5.0, 5.0),
        ("b.tif", "lawn", 1, 100.0, 100.0, 100.0),
        ("b.tif", "building", 0, 0.0, None, None),  # listed by the summary table only
        (None, "lawn", 4, 190.0, 47.5, 40.0),  # 10, 20, 60, 100: median (20 + 60) / 2
        (None, "building", 1, 5.0, 5.0, 5.0),
    ]
    assert rows[0].total_area_ha == pytest.approx(0.009)
    assert rows[0].total_area_km2 == pytest.approx(0.00009)


def test_a_single_source_has_no_total_rows() -> None:
    rows = summarize_areas(
        np.array(["s.tif", "s.tif"]),
        np.array(["lawn", "lawn"]),
        np.array([1.0, 4.0]),
        ["s.tif"],
        ["lawn"],
    )
    assert [(r.source, r.count, r.mean_area_m2, r.median_area_m2) for r in rows] == [
        ("s.tif", 2, 2.5, 2.5)
    ]


def test_csv_has_every_column_at_full_precision(rows: list[AreaSummary]) -> None:
    table = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert tuple(table[0]) == COLUMNS
    assert table[0]["source"] == "a.tif"
    assert float(table[0]["total_area_km2"]) == 90.0 / 1e6
    assert table[3]["mean_area_m2"] == ""  # no objects: no mean
    assert table[4]["source"] == ""  # the total over all sources
    assert float(table[4]["median_area_m2"]) == 40.0


def test_json_is_a_list_of_records_with_nulls(rows: list[AreaSummary]) -> None:
    records = json.loads(format_json(rows))
    assert records[4] == {
        "source": None,
        "class_name": "lawn",
        "count": 4,
        "total_area_m2": 190.0,
        "total_area_ha": 0.019,
        "total_area_km2": 0.00019,
        "mean_area_m2": 47.5,
        "median_area_m2": 40.0,
    }
    assert records[3]["median_area_m2"] is None


def test_table_aligns_columns_and_labels_totals(rows: list[AreaSummary]) -> None:
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:3] == ["source", "class", "count"]
    assert len({len(line) for line in lines}) == 1  # right-aligned last column: equal widths
    count_end = lines[0].index("count") + len("count")
    assert [line[count_end - 1] for line in lines[1:]] == ["3", "1", "1", "0", "4", "1"]
    assert lines[5].startswith("all sources  lawn")
    assert lines[4].split()[-2:] == ["-", "-"]
    assert lines[1].split()[3:6] == ["90.0", "0.01", "0.0001"]


def test_unknown_format_is_refused(rows: list[AreaSummary]) -> None:
    with pytest.raises(ValueError, match="xml"):
        format_summary(rows, "xml")
