"""Per-class, per-source object counts and area statistics of a geoseg output.

The statistics are computed from the objects of the class layers (``area_m2``, the geodesic
ground area of each object), not copied from the output's ``summary`` table, which only holds
counts and totals; the ``summary`` table contributes the sources that have no objects at all.
Rendering (aligned text, CSV, JSON) is pure too: it returns strings.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from geoseg.reports.results import Results

__all__ = [
    "COLUMNS",
    "FORMATS",
    "TABLE_HEADER",
    "AreaSummary",
    "align_table",
    "format_csv",
    "format_json",
    "format_summary",
    "format_table",
    "number_cells",
    "summarize",
    "summarize_areas",
]

FORMATS = ("table", "csv", "json")
"""Renderings of a summary, by name."""

M2_PER_HA = 10_000.0
M2_PER_KM2 = 1_000_000.0

COLUMNS = (
    "source",
    "class_name",
    "count",
    "total_area_m2",
    "total_area_ha",
    "total_area_km2",
    "mean_area_m2",
    "median_area_m2",
)
"""Columns of the CSV and keys of the JSON rendering, in order."""
_ALL_SOURCES = "all sources"


@dataclass(frozen=True)
class AreaSummary:
    """Objects of one class in one source raster (or in all of them).

    Attributes
    ----------
    source : str or None
        Source raster as recorded by the run; None for the total over all sources.
    class_name : str
        The class.
    count : int
        Number of objects.
    total_area_m2 : float
        Sum of the objects' ground areas in square metres.
    mean_area_m2, median_area_m2 : float or None
        Mean and median ground area of one object in square metres; None without objects.
    """

    source: str | None
    class_name: str
    count: int
    total_area_m2: float
    mean_area_m2: float | None
    median_area_m2: float | None

    @property
    def total_area_ha(self) -> float:
        """Total ground area in hectares."""
        return self.total_area_m2 / M2_PER_HA

    @property
    def total_area_km2(self) -> float:
        """Total ground area in square kilometres."""
        return self.total_area_m2 / M2_PER_KM2

    def as_dict(self) -> dict[str, str | int | float | None]:
        """The row with every column of :data:`COLUMNS`, in that order."""
        return {name: getattr(self, name) for name in COLUMNS}


def summarize(results: Results) -> list[AreaSummary]:
    """Summarise a geoseg output: see :func:`summarize_areas`."""
    objects = results.objects
    return summarize_areas(
        objects.source, objects.class_name, objects.area_m2, results.sources, results.class_names
    )


def summarize_areas(
    source: npt.NDArray[np.object_ | np.str_],
    class_name: npt.NDArray[np.object_ | np.str_],
    area_m2: npt.NDArray[np.floating],
    sources: Sequence[str],
    class_names: Sequence[str],
) -> list[AreaSummary]:
    """Count objects and total, average and take the median of their areas by source and class.

    Parameters
    ----------
    source, class_name : ndarray of str
        Each object's source raster and class.
    area_m2 : ndarray of float
        Each object's ground area in square metres.
    sources, class_names : sequence of str
        Every source and class to report, in order, including those without objects.

    Returns
    -------
    list of AreaSummary
        One row per source and class (sources outer, classes inner, zero counts included);
        with several sources, then one row per class totalling all sources (``source`` None).

    Examples
    --------
    >>> import numpy as np
    >>> rows = summarize_areas(np.array(["a.tif"] * 3), np.array(["lawn"] * 3),
    ...                        np.array([1.0, 2.0, 6.0]), ["a.tif"], ["lawn", "bridge"])
    >>> [(r.class_name, r.count, r.total_area_m2, r.mean_area_m2, r.median_area_m2) for r in rows]
    [('lawn', 3, 9.0, 3.0, 2.0), ('bridge', 0, 0.0, None, None)]
    """
    areas = np.asarray(area_m2, dtype=np.float64)
    every_source = list(dict.fromkeys([*sources, *np.asarray(source).tolist()]))
    rows = [
        _row(name, cls, areas[(source == name) & (class_name == cls)])
        for name in every_source
        for cls in class_names
    ]
    if len(every_source) > 1:
        rows += [_row(None, cls, areas[class_name == cls]) for cls in class_names]
    return rows


def _row(source: str | None, class_name: str, areas: npt.NDArray[np.float64]) -> AreaSummary:
    count = int(areas.size)
    total = float(areas.sum())
    return AreaSummary(
        source=source,
        class_name=class_name,
        count=count,
        total_area_m2=total,
        mean_area_m2=total / count if count else None,
        median_area_m2=float(np.median(areas)) if count else None,
    )


def format_summary(rows: Sequence[AreaSummary], fmt: str) -> str:
    """Render rows in one of :data:`FORMATS`; the text ends with a newline."""
    if fmt == "table":
        return format_table(rows)
    if fmt == "csv":
        return format_csv(rows)
    if fmt == "json":
        return format_json(rows)
    raise ValueError(f"unknown summary format {fmt!r}; choose one of {', '.join(FORMATS)}")


def format_table(rows: Sequence[AreaSummary]) -> str:
    """Rows as an aligned text table for the terminal, areas rounded for reading.

    Areas in m² have one decimal, hectares two, km² four; thousands are separated by commas. The
    total over all sources is labelled ``all sources``; a mean or median without objects is ``-``.
    """
    body = [
        (_ALL_SOURCES if row.source is None else row.source, row.class_name, *number_cells(row))
        for row in rows
    ]
    return align_table(TABLE_HEADER, body, text_columns=2)


TABLE_HEADER = (
    "source",
    "class",
    "count",
    "area m²",
    "area ha",
    "area km²",
    "mean m²",
    "median m²",
)
"""Column titles of a summary table."""


def number_cells(row: AreaSummary) -> tuple[str, ...]:
    """A row's count and areas as table text, rounded for reading (see `format_table`)."""
    return (
        f"{row.count:,}",
        f"{row.total_area_m2:,.1f}",
        f"{row.total_area_ha:,.2f}",
        f"{row.total_area_km2:,.4f}",
        "-" if row.mean_area_m2 is None else f"{row.mean_area_m2:,.1f}",
        "-" if row.median_area_m2 is None else f"{row.median_area_m2:,.1f}",
    )


def align_table(header: Sequence[str], body: Sequence[Sequence[str]], text_columns: int) -> str:
    """Cells as aligned text: the first ``text_columns`` columns left-aligned, numbers right.

    Columns are two spaces apart; the text ends with a newline.
    """
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    lines = []
    for line in (header, *body):
        cells = [
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def format_csv(rows: Sequence[AreaSummary]) -> str:
    """Rows as CSV with a header of :data:`COLUMNS`; full precision, empty for None."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row.as_dict().values()])
    return buffer.getvalue()


def format_json(rows: Sequence[AreaSummary]) -> str:
    """Rows as a JSON array of objects keyed by :data:`COLUMNS`; None becomes null."""
    return json.dumps([row.as_dict() for row in rows], indent=2, ensure_ascii=False) + "\n"
