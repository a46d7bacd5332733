"""Files that are not geoseg outputs, for the error paths of the report and export commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely


def not_geoseg_outputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Bad GeoPackage inputs by case: ``(path, text the one-line error must contain)``."""
    text = folder / "notes.gpkg"
    text.write_text("not a GeoPackage")
    other = folder / "roads.gpkg"
    pyogrio.raw.write(
        other,
        shapely.to_wkb(np.array([shapely.LineString([(0, 0), (1, 1)])])),
        [np.array(["main street"], dtype=object)],
        fields=["name"],
        layer="roads",
        driver="GPKG",
        geometry_type="LineString",
        crs="EPSG:4326",
    )
    geojson = folder / "lawns.geojson"
    geojson.write_text('{"type": "FeatureCollection", "features": []}')
    return {
        "missing": (folder / "absent.gpkg", "absent.gpkg does not exist"),
        "folder": (folder, "is a folder"),
        "text": (text, "notes.gpkg is not a GeoPackage"),
        "other gpkg": (other, "roads.gpkg is not a geoseg output"),
        "geojson": (geojson, "lawns.geojson is not a GeoPackage"),
    }
