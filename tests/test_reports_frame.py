"""The quicklook picture's layout: map size, footer, the longest side."""

from __future__ import annotations

import pytest

from geoseg.errors import OptionsError
from geoseg.reports.frame import MIN_SIZE, format_area, plan_layout


@pytest.mark.parametrize(
    ("width", "height", "classes"), [(2000, 1000, 1), (1000, 3000, 2), (500, 500, 12), (10, 1, 3)]
)
def test_layout_fills_the_longest_side_and_keeps_the_aspect_ratio(
    width: int, height: int, classes: int
) -> None:
    layout = plan_layout(width, height, classes, 800)
    assert layout.width == layout.map_width
    assert max(layout.width, layout.height) == 800
    assert layout.map_width / layout.map_height == pytest.approx(width / height, rel=0.02)
    rows = -(-classes // layout.columns)
    assert layout.footer_height >= rows * 20


def test_layout_refuses_a_size_too_small_for_the_legend() -> None:
    with pytest.raises(OptionsError, match="--max-size 100 is too small"):
        plan_layout(100, 100, 2, 100)
    assert plan_layout(100, 100, 2, MIN_SIZE).height <= MIN_SIZE


def test_areas_read_in_the_unit_that_fits() -> None:
    assert [format_area(a) for a in (0, 9_999.4, 10_000, 999_999, 1_000_000, 2.5e9)] == [
        "0 m²", "9,999 m²", "1.00 ha", "100.00 ha", "1.00 km²", "2,500.00 km²",
    ]  # fmt: skip
