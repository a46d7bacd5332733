from __future__ import annotations

from itertools import pairwise

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geoseg.tasks.dissolve import dissolve_groups, drop_collinear, node_edges
from geoseg.tasks.vectorize import polygonize_labels


def same_shape(a: shapely.Geometry, b: shapely.Geometry) -> bool:
    """Equal vertex for vertex once normalized."""
    return bool(shapely.normalize(a).equals_exact(shapely.normalize(b), 0))


def test_node_edges_inserts_the_vertices_a_neighbour_has_on_a_shared_line() -> None:
    left = shapely.box(0, 0, 2, 4)
    right = shapely.box(2, 1, 3, 3)
    noded_left, noded_right = node_edges(np.array([left, right], dtype=object))
    assert {(2.0, 1.0), (2.0, 3.0)} <= set(map(tuple, shapely.get_coordinates(noded_left).tolist()))
    assert shapely.get_num_coordinates(noded_right) == 5
    assert noded_left.equals(left)
    assert noded_left.is_valid


def test_node_edges_keeps_each_edges_direction() -> None:
    # Clockwise, so the shared edge runs downwards (y decreasing) and its inserts too.
    clockwise = shapely.Polygon([(0, 0), (0, 4), (2, 4), (2, 0)])
    (noded, _) = node_edges(np.array([clockwise, shapely.box(2, 1, 3, 3)], dtype=object))
    assert shapely.get_coordinates(noded).tolist() == [
        [0, 0], [0, 4], [2, 4], [2, 3], [2, 1], [2, 0], [0, 0]
    ]  # fmt: skip


def test_node_edges_leaves_pieces_that_need_nothing_alone() -> None:
    pieces = np.array([shapely.box(0, 0, 1, 1), shapely.box(5, 5, 6, 6)], dtype=object)
    assert all(same_shape(a, b) for a, b in zip(node_edges(pieces), pieces, strict=True))


def test_drop_collinear_drops_straight_vertices_even_where_a_ring_starts() -> None:
    ring = [(1, 0), (2, 0), (2, 2), (0, 2), (0, 0)]  # (1, 0) sits on the bottom edge
    hole = [(0.5, 0.5), (0.5, 1), (0.5, 1.5), (1.5, 1.5), (1.5, 0.5)]
    (result,) = drop_collinear(np.array([shapely.Polygon(ring, [hole])], dtype=object))
    square_hole = [(0.5, 0.5), (0.5, 1.5), (1.5, 1.5), (1.5, 0.5)]
    assert same_shape(result, shapely.Polygon(shapely.box(0, 0, 2, 2).exterior, [square_hole]))


def test_drop_collinear_keeps_each_geometrys_parts_and_type() -> None:
    corners = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(1, 1, 2, 2)])
    single = shapely.MultiPolygon([shapely.Polygon([(5, 5), (6, 5), (7, 5), (7, 6), (5, 6)])])
    square = shapely.box(8, 8, 9, 9)
    result = drop_collinear(np.array([corners, single, square], dtype=object))
    assert same_shape(result[0], corners)
    assert same_shape(result[1], shapely.MultiPolygon([shapely.box(5, 5, 7, 6)]))
    assert same_shape(result[2], square)


def test_dissolve_joins_each_groups_pieces_into_one_polygon() -> None:
    first = [shapely.box(0, 0, 2, 3), shapely.box(2, 1, 5, 2)]
    second = [shapely.box(5, 0, 6, 1), shapely.box(5, 1, 6, 3)]  # touches the first group
    pieces = np.array([first[0], second[0], first[1], second[1]], dtype=object)
    result = dissolve_groups(pieces, np.array([0, 1, 0, 1]))
    assert same_shape(result[0], shapely.simplify(shapely.union_all(first), 0))
    assert shapely.get_num_coordinates(result[0]) == 9
    assert same_shape(result[1], shapely.box(5, 0, 6, 3))


@st.composite
def cut_labels(draw: st.DrawFn) -> tuple[np.ndarray, list[int], list[int]]:
    """Random labels (up to 3 objects, touching in every way) and the row and column lines
    that cut them into cores."""
    height = draw(st.integers(2, 14))
    width = draw(st.integers(2, 14))
    labels = draw(arrays(np.uint32, (height, width), elements=st.integers(0, 3)))
    rows = sorted(draw(st.sets(st.integers(1, height - 1), max_size=3)))
    cols = sorted(draw(st.sets(st.integers(1, width - 1), max_size=3)))
    return labels, [0, *rows, height], [0, *cols, width]


@settings(max_examples=300, deadline=None)
@given(cut_labels(), st.integers(1, 3))
def test_dissolving_the_cores_pieces_gives_back_each_objects_whole_polygon(
    cut: tuple[np.ndarray, list[int], list[int]], cores_per_block: int
) -> None:
    labels, rows, cols = cut
    cores = [
        ((c0, r0, c1, r1), (i // cores_per_block) * 8 + j // cores_per_block)
        for i, (r0, r1) in enumerate(pairwise(rows))
        for j, (c0, c1) in enumerate(pairwise(cols))
    ]
    found = [
        (label, block, piece.wkb)
        for core, block in cores
        for label, piece in polygonize_labels(labels, 0, 0, core).items()
    ]
    if not found:
        return
    found.sort()
    objects = np.unique([label for label, _, _ in found])
    pieces = np.array([shapely.from_wkb(wkb) for _, _, wkb in found], dtype=object)
    group = np.searchsorted(objects, [label for label, _, _ in found])
    block = np.array([block for _, block, _ in found])
    by_blocks = dissolve_groups(pieces, group, block, min_block_pieces=0)
    at_once = dissolve_groups(pieces, group)
    whole = polygonize_labels(labels, 0, 0)
    for n, label in enumerate(objects.tolist()):
        assert by_blocks[n].is_valid
        assert same_shape(by_blocks[n], whole[label])
        assert same_shape(at_once[n], whole[label])
        members = pieces[group == n]
        assert same_shape(at_once[n], shapely.simplify(shapely.union_all(members), 0))
