"""Change between two geoseg runs over the same place: objects appeared, disappeared, persisted.

Objects of the same class are matched across the runs by the intersection over union (IoU) of
their polygons, computed in the first run's CRS: a pair with IoU ≥ :data:`IOU_THRESHOLD` (0.5 by
default) is the same object seen twice (*persisted*); an object of the first run with no match
*disappeared*, one of the second run with no match *appeared*. Above 0.5, a polygon can match at
most one of a set of non-overlapping polygons, so the matching is one-to-one by construction;
pairs are still taken greedily by decreasing IoU so that lower thresholds stay one-to-one too.

Areas are the objects' own ``area_m2`` (geodesic, see :mod:`geoseg.tasks.measure`); per zone,
both runs are measured inside the zones with :func:`geoseg.reports.zones.measure_zones`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyogrio.errors
import pyogrio.raw
import pyproj
import shapely

from geoseg.errors import OptionsError, OutputError
from geoseg.reports.export import replacing
from geoseg.reports.results import Results
from geoseg.reports.summary import align_table
from geoseg.reports.zones import Zones, measure_zones
from geoseg.tasks.reading import first_line

__all__ = [
    "FORMATS",
    "IOU_THRESHOLD",
    "ClassChange",
    "Comparison",
    "ObjectChange",
    "ZoneChange",
    "compare",
    "format_comparison",
    "match_objects",
    "write_changes",
]

IOU_THRESHOLD = 0.5
"""Least IoU of two polygons of the same class for them to be the same object."""

FORMATS = ("table", "csv", "json")
"""Text renderings of a comparison."""


@dataclass(frozen=True)
class ObjectChange:
    """One object's fate: matched across the runs, or seen in one of them only.

    ``before_id``/``after_id`` and areas are None for the run the object is missing from;
    ``iou`` is None unless persisted.
    """

    status: str
    class_name: str
    before_id: str | None
    after_id: str | None
    before_area_m2: float | None
    after_area_m2: float | None
    iou: float | None


@dataclass(frozen=True)
class ClassChange:
    """Counts and total ground areas (m²) of one class in both runs."""

    class_name: str
    before_count: int
    after_count: int
    persisted: int
    appeared: int
    disappeared: int
    before_area_m2: float
    after_area_m2: float

    @property
    def change_m2(self) -> float:
        """Area after minus area before, square metres."""
        return self.after_area_m2 - self.before_area_m2

    @property
    def change_pct(self) -> float | None:
        """Relative change in percent; None when there was no area before."""
        return 100.0 * self.change_m2 / self.before_area_m2 if self.before_area_m2 else None

    def as_dict(self) -> dict[str, str | int | float | None]:
        """Every field plus ``change_m2`` and ``change_pct``."""
        return {**asdict(self), "change_m2": self.change_m2, "change_pct": self.change_pct}


@dataclass(frozen=True)
class ZoneChange:
    """Ground area (m²) of one class inside one zone in both runs."""

    zone: str | int | float
    class_name: str
    before_area_m2: float
    after_area_m2: float

    @property
    def change_m2(self) -> float:
        """Area after minus area before, square metres."""
        return self.after_area_m2 - self.before_area_m2

    def as_dict(self) -> dict[str, str | int | float | None]:
        """Every field plus ``change_m2``."""
        return {**asdict(self), "change_m2": self.change_m2}


@dataclass(frozen=True, eq=False)
class Comparison:
    """The change between two runs.

    Attributes
    ----------
    iou_threshold : float
        The matching threshold used.
    objects : list of ObjectChange
        Every object of both runs once, persisted pairs as one entry.
    geometry : ndarray of object
        Per entry of ``objects``: the polygon after (persisted, appeared) or before
        (disappeared), in ``crs_wkt``.
    crs_wkt : str
        CRS of ``geometry``: the first run's.
    classes : list of ClassChange
        One per class of either run, the first run's classes first.
    zones : list of ZoneChange
        One per zone and class with ``--zones``, else empty.
    """

    iou_threshold: float
    objects: list[ObjectChange]
    geometry: npt.NDArray[np.object_]
    crs_wkt: str
    classes: list[ClassChange]
    zones: list[ZoneChange]


def match_objects(
    before: npt.NDArray[np.object_], after: npt.NDArray[np.object_], threshold: float
) -> list[tuple[int, int, float]]:
    """Pairs ``(before index, after index, IoU)`` of polygons (same CRS) with IoU ≥ threshold.

    Each polygon is in at most one pair; candidates are taken by decreasing IoU.

    Examples
    --------
    >>> import numpy as np, shapely
    >>> moved = shapely.box(1, 0, 11, 10)  # shifted by a tenth: IoU 90 / 110
    >>> match_objects(np.array([shapely.box(0, 0, 10, 10)]), np.array([moved]), 0.5)
    [(0, 0, 0.8181818181818182)]
    """
    if not 0.0 < threshold <= 1.0:
        raise OptionsError(f"the IoU threshold must be in (0, 1], got {threshold}")
    if before.size == 0 or after.size == 0:
        return []
    first, second = shapely.STRtree(after).query(before, predicate="intersects")
    overlap = shapely.area(shapely.intersection(before[first], after[second]))
    union = shapely.area(before[first]) + shapely.area(after[second]) - overlap
    iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    pairs: list[tuple[int, int, float]] = []
    used_before: set[int] = set()
    used_after: set[int] = set()
    for k in np.argsort(-iou, kind="stable").tolist():
        b, a, value = int(first[k]), int(second[k]), float(iou[k])
        if value < threshold:
            break
        if b not in used_before and a not in used_after:
            pairs.append((b, a, value))
            used_before.add(b)
            used_after.add(a)
    return sorted(pairs)


def compare(
    before: Results,
    after: Results,
    threshold: float = IOU_THRESHOLD,
    zones: Zones | None = None,
) -> Comparison:
    """Match the objects of two runs class by class and total their areas (and per zone).

    The second run's objects are reprojected to the first run's CRS when the runs differ.
    """
    crs = pyproj.CRS(before.crs_wkt)
    after_geometry = _to_crs(after.objects.geometry, pyproj.CRS(after.crs_wkt), crs)
    class_names = list(dict.fromkeys([*before.class_names, *after.class_names]))
    changes: list[ObjectChange] = []
    geometry: list[shapely.Geometry] = []
    classes: list[ClassChange] = []
    for name in class_names:
        b_rows = np.flatnonzero(before.objects.class_name == name)
        a_rows = np.flatnonzero(after.objects.class_name == name)
        pairs = match_objects(before.objects.geometry[b_rows], after_geometry[a_rows], threshold)
        matched_b = {b for b, _, _ in pairs}
        matched_a = {a for _, a, _ in pairs}
        for b, a, iou in pairs:
            changes.append(_change("persisted", name, before, b_rows[b], after, a_rows[a], iou))
            geometry.append(after_geometry[a_rows[a]])
        for a in sorted(set(range(a_rows.size)) - matched_a):
            changes.append(_change("appeared", name, None, None, after, a_rows[a], None))
            geometry.append(after_geometry[a_rows[a]])
        for b in sorted(set(range(b_rows.size)) - matched_b):
            changes.append(_change("disappeared", name, before, b_rows[b], None, None, None))
            geometry.append(before.objects.geometry[b_rows[b]])
        classes.append(
            ClassChange(
                class_name=name,
                before_count=int(b_rows.size),
                after_count=int(a_rows.size),
                persisted=len(pairs),
                appeared=int(a_rows.size) - len(pairs),
                disappeared=int(b_rows.size) - len(pairs),
                before_area_m2=float(before.objects.area_m2[b_rows].sum()),
                after_area_m2=float(after.objects.area_m2[a_rows].sum()),
            )
        )
    return Comparison(
        iou_threshold=threshold,
        objects=changes,
        geometry=np.array(geometry, dtype=object),
        crs_wkt=before.crs_wkt,
        classes=classes,
        zones=_zone_changes(before, after, zones, class_names) if zones is not None else [],
    )


def _to_crs(
    geometry: npt.NDArray[np.object_], source: pyproj.CRS, target: pyproj.CRS
) -> npt.NDArray[np.object_]:
    if source == target:
        return geometry
    move = pyproj.Transformer.from_crs(source, target, always_xy=True)
    moved: npt.NDArray[np.object_] = shapely.transform(
        geometry, lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1]))
    )
    return moved


def _change(
    status: str,
    class_name: str,
    before: Results | None,
    b: int | None,
    after: Results | None,
    a: int | None,
    iou: float | None,
) -> ObjectChange:
    return ObjectChange(
        status=status,
        class_name=class_name,
        before_id=None if before is None else str(before.objects.object_id[b]),
        after_id=None if after is None else str(after.objects.object_id[a]),
        before_area_m2=None if before is None else float(before.objects.area_m2[b]),
        after_area_m2=None if after is None else float(after.objects.area_m2[a]),
        iou=iou,
    )


def _zone_changes(
    before: Results, after: Results, zones: Zones, class_names: Sequence[str]
) -> list[ZoneChange]:
    then = measure_zones(before, zones)
    now = measure_zones(after, zones)
    return [
        ZoneChange(
            zone=old.key,
            class_name=name,
            before_area_m2=old.area_m2.get(name, 0.0),
            after_area_m2=new.area_m2.get(name, 0.0),
        )
        for old, new in zip(then, now, strict=True)
        for name in class_names
    ]


def format_comparison(comparison: Comparison, fmt: str) -> str:
    """Render in one of :data:`FORMATS`; the text ends with a newline.

    ``table``: the per-class table (and the per-zone one) rounded for reading; ``csv``: the
    per-zone rows with zones, else the per-class rows, full precision; ``json``: everything
    but the object geometries.
    """
    if fmt == "table":
        return _table(comparison)
    if fmt == "csv":
        rows = comparison.zones or comparison.classes
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        records = [row.as_dict() for row in rows]
        if records:
            writer.writerow(records[0])
        for record in records:
            writer.writerow(["" if value is None else value for value in record.values()])
        return buffer.getvalue()
    if fmt == "json":
        document = {
            "iou_threshold": comparison.iou_threshold,
            "classes": [row.as_dict() for row in comparison.classes],
            "zones": [row.as_dict() for row in comparison.zones],
            "objects": [asdict(change) for change in comparison.objects],
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _signed(value: float, decimals: int = 1) -> str:
    """``+1,234.5``; a change that rounds to zero is ``+0.0``, never ``-0.0``."""
    return f"{round(value, decimals) + 0.0:+,.{decimals}f}"


def _table(comparison: Comparison) -> str:
    header = ("class", "before", "after", "persisted", "appeared", "disappeared",
              "area before m²", "area after m²", "change m²", "change %")  # fmt: skip
    body = [
        (
            row.class_name,
            f"{row.before_count:,}",
            f"{row.after_count:,}",
            f"{row.persisted:,}",
            f"{row.appeared:,}",
            f"{row.disappeared:,}",
            f"{row.before_area_m2:,.1f}",
            f"{row.after_area_m2:,.1f}",
            _signed(row.change_m2),
            "-" if row.change_pct is None else _signed(row.change_pct),
        )
        for row in comparison.classes
    ]
    text = align_table(header, body, text_columns=1)
    if comparison.zones:
        zone_body = [
            (
                str(row.zone),
                row.class_name,
                f"{row.before_area_m2:,.1f}",
                f"{row.after_area_m2:,.1f}",
                _signed(row.change_m2),
            )
            for row in comparison.zones
        ]
        text += "\n" + align_table(
            ("zone", "class", "area before m²", "area after m²", "change m²"),
            zone_body,
            text_columns=2,
        )
    return text + f"(objects matched at IoU ≥ {comparison.iou_threshold:g})\n"


def write_changes(comparison: Comparison, path: Path, overwrite: bool = False) -> None:
    """Write atomically: ``.gpkg`` holds a ``changes`` layer (every object with its status, in
    the first run's CRS), a ``classes`` table and, with zones, a ``zones`` table; ``.csv`` and
    ``.json`` hold :func:`format_comparison`'s text.

    Raises
    ------
    OutputError
        If ``path`` exists without ``overwrite`` or cannot be written; nothing is left behind.
    """
    suffix = path.suffix.lower()
    with replacing(path, overwrite) as temp:
        if suffix in (".csv", ".json"):
            temp.write_text(format_comparison(comparison, suffix[1:]), encoding="utf-8")
            return
        try:
            _write_layer(temp, "changes", comparison.geometry, comparison.objects, comparison)
            _write_layer(temp, "classes", None, comparison.classes, comparison)
            if comparison.zones:
                _write_layer(temp, "zones", None, comparison.zones, comparison)
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            raise OutputError(f"cannot write {path}: {first_line(exc)}") from exc


def _write_layer(
    path: Path,
    layer: str,
    geometry: npt.NDArray[np.object_] | None,
    rows: Sequence[ObjectChange | ClassChange | ZoneChange],
    comparison: Comparison,
) -> None:
    records = [
        row.as_dict() if isinstance(row, ClassChange | ZoneChange) else asdict(row) for row in rows
    ]
    names = list(records[0]) if records else list(ObjectChange.__dataclass_fields__)
    columns = [_column([record[name] for record in records]) for name in names]
    wkb = None
    if geometry is not None:
        multi = [
            g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in geometry
        ]
        wkb = shapely.to_wkb(np.array(multi, dtype=object))
    pyogrio.raw.write(
        path,
        wkb,
        columns,
        fields=names,
        layer=layer,
        driver="GPKG",
        geometry_type=None if geometry is None else "MultiPolygon",
        crs=None if geometry is None else comparison.crs_wkt,
        append=layer != "changes",
    )


def _column(values: list[str | int | float | None]) -> npt.NDArray[np.generic]:
    """Values typed for a GeoPackage column: integers, reals (None as NaN), else text."""
    present = [value for value in values if value is not None]
    integers = all(isinstance(v, int) and not isinstance(v, bool) for v in present)
    if present and integers and len(present) == len(values):
        return np.array(values, dtype=np.int64)
    if present and all(isinstance(v, int | float) for v in present):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array([None if v is None else str(v) for v in values], dtype=object)
