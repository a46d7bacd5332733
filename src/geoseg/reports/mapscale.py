"""Ground scale and true north at the centre of a map, for scale bars and north arrows.

Distances are geodesic on the CRS's ellipsoid, so they are true ground metres in any CRS: in
EPSG:4326 a degree of longitude is not a degree of latitude, and in Web Mercator a metre of the
CRS is less than a metre on the ground away from the equator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyproj
from affine import Affine
from pyproj.enums import TransformDirection

__all__ = ["ScaleBar", "north_angle_deg", "plan_scale_bar"]

SCALE_BAR_FRACTION = 0.2
"""A scale bar is at most this fraction of the map's width."""


@dataclass(frozen=True)
class ScaleBar:
    """A scale bar: its ground length in metres, its length in map pixels, its label."""

    length_m: float
    length_px: float
    label: str


def plan_scale_bar(transform: Affine, crs: pyproj.CRS, width: int, height: int) -> ScaleBar | None:
    """A scale bar of a round ground length, at most a fifth of the map's width.

    The ground size of a map pixel is measured geodesically along the map's middle row, on the
    CRS's ellipsoid, so the bar is true in any CRS (in EPSG:4326 a degree of longitude is not
    a degree of latitude; in Web Mercator a metre of the CRS is less on the ground away from the
    equator). Where the scale differs by more than 1% between the map's top and bottom rows the
    label says it holds at the map's centre.

    Returns None for a CRS without an ellipsoid.
    """
    ground = _Ground.of(crs)
    if ground is None:
        return None
    centre = ground.metres_per_px(transform, width, height / 2)
    if not math.isfinite(centre) or centre <= 0:
        return None
    edges = [ground.metres_per_px(transform, width, row) for row in (0.5, height - 0.5)]
    varies = max(abs(edge / centre - 1) for edge in edges) > 0.01
    length = _round_length(centre * width * SCALE_BAR_FRACTION)
    label = _format_distance(length) + (" at the centre" if varies else "")
    return ScaleBar(length, length / centre, label)


def north_angle_deg(transform: Affine, crs: pyproj.CRS, width: int, height: int) -> float | None:
    """Direction of true north at the map's centre, in degrees clockwise from the map's up.

    Zero for north-up rasters in geographic or Mercator CRSs; a few degrees away from a
    projection's central meridian (meridian convergence); 180 for north-down rasters. None
    where it cannot be computed (no ellipsoid, a pole).
    """
    ground = _Ground.of(crs)
    if ground is None:
        return None
    step_px = max(width, height) / 20
    step_m = ground.metres_per_px(transform, width, height / 2) * step_px
    x, y = transform @ (width / 2, height / 2)
    lon, lat = ground.to_lonlat.transform(x, y)
    lon, lat, _ = ground.geod.fwd(lon, lat, 0.0, step_m)
    x, y = ground.to_lonlat.transform(lon, lat, direction=TransformDirection.INVERSE)
    col, row = ~transform @ (x, y)
    d_col, d_row = col - width / 2, row - height / 2
    if not (math.isfinite(d_col) and math.isfinite(d_row)) or (d_col == 0 and d_row == 0):
        return None
    return math.degrees(math.atan2(d_col, -d_row))


@dataclass(frozen=True)
class _Ground:
    """A CRS's ellipsoid and the way to its geographic coordinates, for ground distances."""

    geod: pyproj.Geod
    to_lonlat: pyproj.Transformer

    @classmethod
    def of(cls, crs: pyproj.CRS) -> _Ground | None:
        geod, geodetic = crs.get_geod(), crs.geodetic_crs
        if geod is None or geodetic is None:
            return None
        return cls(geod, pyproj.Transformer.from_crs(crs, geodetic, always_xy=True))

    def metres_per_px(self, transform: Affine, width: int, row: float) -> float:
        """Ground length of a map pixel along ``row``, around the map's middle column."""
        span = max(width / 10, 1.0)
        left = transform @ (width / 2 - span / 2, row)
        right = transform @ (width / 2 + span / 2, row)
        lon, lat = self.to_lonlat.transform([left[0], right[0]], [left[1], right[1]])
        return float(self.geod.inv(lon[0], lat[0], lon[1], lat[1])[2]) / span


def _round_length(metres: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above ``metres``."""
    power = 10.0 ** math.floor(math.log10(metres))
    return next(step * power for step in (5, 2, 1) if step * power <= metres * (1 + 1e-9))


def _format_distance(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
