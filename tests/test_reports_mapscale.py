"""Scale bars in true ground metres and north arrows, in projected, geographic and Mercator CRSs."""

from __future__ import annotations

import pyproj
import pytest
from affine import Affine

from geoseg.reports.mapscale import north_angle_deg, plan_scale_bar

UTM = "EPSG:32636"


def ground_m(crs: str, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Geodesic distance between two points of ``crs``, computed directly with pyproj."""
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    (lon1, lon2), (lat1, lat2) = to_lonlat.transform([a[0], b[0]], [a[1], b[1]])
    return float(pyproj.Geod(ellps="WGS84").inv(lon1, lat1, lon2, lat2)[2])


@pytest.mark.parametrize(
    ("crs", "transform", "expected_m"),
    [
        # 0.0001 degree pixels at 60 N: a pixel is about 5.6 m wide on the ground, not 11 m.
        ("EPSG:4326", Affine(0.0001, 0, 10.0, 0, -0.0001, 60.05), 1000),
        # Web Mercator at 60 N: a CRS metre is half a metre on the ground.
        ("EPSG:3857", Affine(1.0, 0, 1_113_194, 0, -1.0, 8_399_737), 100),
        ("EPSG:32636", Affine(0.5, 0, 500_000, 0, -0.5, 40_000), 100),
    ],
)
def test_scale_bar_is_true_ground_length(crs: str, transform: Affine, expected_m: float) -> None:
    bar = plan_scale_bar(transform, pyproj.CRS(crs), 1000, 1000)
    assert bar is not None
    assert bar.length_m == expected_m
    centre_row = 500
    metres = ground_m(crs, transform @ (450, centre_row), transform @ (550, centre_row))
    assert bar.length_px == pytest.approx(expected_m / (metres / 100), rel=1e-3)
    assert bar.label == (f"{expected_m / 1000:g} km" if expected_m >= 1000 else f"{expected_m} m")


def test_scale_bar_says_where_it_holds_when_the_scale_varies() -> None:
    # 10 degrees of latitude from 40 to 50 N: the ground width of a degree changes by a fifth.
    bar = plan_scale_bar(Affine(0.01, 0, 0, 0, -0.01, 50), pyproj.CRS("EPSG:4326"), 1000, 1000)
    assert bar is not None
    assert bar.label.endswith("at the centre")


def test_north_arrow_follows_meridian_convergence() -> None:
    mercator = Affine(1.0, 0, 1_113_194, 0, -1.0, 8_399_737)
    assert north_angle_deg(mercator, pyproj.CRS("EPSG:3857"), 500, 500) == pytest.approx(
        0, abs=1e-6
    )
    # 6 degrees east of UTM 36N's central meridian at 60 N, grid north leans east of true north.
    x, y = pyproj.Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(39, 60)
    utm = Affine(1.0, 0, x - 250, 0, -1.0, y + 250)
    angle = north_angle_deg(utm, pyproj.CRS(UTM), 500, 500)
    convergence = pyproj.Proj(UTM).get_factors(39, 60).meridian_convergence
    assert angle == pytest.approx(-abs(convergence), abs=0.05)
    flipped = Affine(1.0, 0, x - 250, 0, 1.0, y - 250)  # a north-down raster
    assert abs(north_angle_deg(flipped, pyproj.CRS(UTM), 500, 500)) == pytest.approx(
        180 - abs(convergence), abs=0.05
    )
