"""Dissolve the pieces of one object, cut by tile cores, back into a single geometry.

The pieces come from polygonizing label arrays: their edges run along pixel boundaries
(axis-parallel, integer vertices) and they never overlap, so together they form a polygonal
coverage. GEOS's coverage union joins such pieces by dropping the edges they share, several
times faster than a general union on an object that crosses hundreds of tiles, but only if
shared edges carry the same vertices on both sides. Two pieces that meet along a core boundary
do not: each has vertices where its own outline turns. Noding every edge at the other pieces'
vertices that lie on it makes them alike.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import shapely

from geoseg.tasks.components import connected_groups

__all__ = ["BLOCK_MIN_PIECES", "dissolve_groups", "drop_collinear", "node_edges"]

BLOCK_MIN_PIECES = 64
"""Objects of more polygons than this, over several blocks, are dissolved block by block."""

_SHIFT = np.int64(1 << 32)


def dissolve_groups(
    pieces: npt.NDArray[np.object_],
    group: npt.NDArray[np.integer],
    block: npt.NDArray[np.integer] | None = None,
    min_block_pieces: int = BLOCK_MIN_PIECES,
) -> npt.NDArray[np.object_]:
    """Per group, the union of its pieces without collinear vertices.

    Equal to ``shapely.simplify(shapely.union_all(...), 0)`` of each group's pieces, for pieces
    that are pixel-edged (Multi)Polygons with non-negative vertices and never overlap.

    GEOS's union takes time that grows faster than the object's size: the 100 MP benchmark
    scene's largest object (1.7 million vertices, 22,000 holes) took 15 s in one union. So a
    large object is dissolved block by block first; the blocks' results are then joined
    without their holes, which cannot change, and get them back at the end.

    Parameters
    ----------
    pieces : ndarray of object
        The pieces of every group.
    group : ndarray of int
        Each piece's group, numbered from 0, every number used.
    block : ndarray of int, optional
        Each piece's block. Blocks must be rectangles that no piece straddles (such as runs of
        whole tile cores), so that no block's pieces can enclose another's. None: one block.
    min_block_pieces : int
        Objects of more polygons than this are dissolved block by block.

    Returns
    -------
    ndarray of object
        One (Multi)Polygon per group, in group order.

    Examples
    --------
    >>> pieces = np.array([shapely.box(0, 0, 2, 2), shapely.box(2, 1, 3, 3)], dtype=object)
    >>> dissolve_groups(pieces, np.array([0, 0]))[0].normalize().wkt
    'POLYGON ((0 0, 0 2, 2 2, 2 3, 3 3, 3 1, 2 1, 2 0, 0 0))'
    """
    polygons, source = shapely.get_parts(pieces, return_index=True)
    owner = np.asarray(group)[source]
    blocks = np.zeros(len(source), dtype=np.int64) if block is None else np.asarray(block)[source]
    order = np.lexsort((blocks, owner))
    firsts = np.flatnonzero(np.diff(owner[order])) + 1
    # Noding all groups at once also inserts other groups' vertices where they touch a piece:
    # harmless, since the shape stays the same and the collinear vertices go at the end.
    noded = np.split(node_edges(polygons[order]), firsts)
    unions = [
        _dissolve_one(members, member_blocks, min_block_pieces)
        for members, member_blocks in zip(noded, np.split(blocks[order], firsts), strict=True)
    ]
    return drop_collinear(np.array(unions, dtype=object))


def _dissolve_one(
    polygons: npt.NDArray[np.object_], block: npt.NDArray[np.integer], min_block_pieces: int
) -> shapely.Geometry:
    """The coverage union of one object's noded polygons, sorted by block."""
    firsts = np.flatnonzero(np.diff(block)) + 1
    if len(polygons) <= min_block_pieces or not len(firsts):
        return shapely.coverage_union_all(polygons)
    parts = shapely.get_parts(
        np.array([shapely.coverage_union_all(b) for b in np.split(polygons, firsts)], dtype=object)
    )
    rings, part_of = shapely.get_rings(parts, return_index=True)
    is_hole = np.r_[False, part_of[1:] == part_of[:-1]]
    # A part inside another's hole (an island) stays as it is: it cannot reach another block.
    # The others' holes lie inside their block: they are set aside while the outlines join.
    inside, _ = shapely.STRtree(shapely.polygons(rings[is_hole])).query(
        shapely.point_on_surface(parts), predicate="within"
    )
    island = np.zeros(len(parts), dtype=bool)
    island[inside] = True
    joining = np.flatnonzero(~island)
    outlines = shapely.polygons(shapely.get_exterior_ring(parts[joining]))
    groups = connected_groups(range(len(joining)), _shared_edges(outlines))
    joined = [
        outlines[members[0]] if len(members) == 1 else shapely.coverage_union_all(outlines[members])
        for members in groups
    ]
    host = np.empty(len(parts), dtype=np.intp)
    for n, members in enumerate(groups):
        host[joining[members]] = n
    joined_rings, joined_of = shapely.get_rings(np.array(joined, dtype=object), return_index=True)
    kept = is_hole & ~island[part_of]
    all_rings = np.concatenate([joined_rings, rings[kept]])
    polygon_of = np.concatenate([joined_of, host[part_of[kept]]])
    order = np.argsort(polygon_of, kind="stable")  # each polygon's outline comes first
    rebuilt = shapely.polygons(all_rings[order], indices=polygon_of[order])
    result = np.concatenate([rebuilt, parts[island]])
    return result[0] if len(result) == 1 else shapely.multipolygons(result)


def _shared_edges(polygons: npt.NDArray[np.object_]) -> list[tuple[int, int]]:
    """Pairs of polygons (indices) whose outlines share an edge, noded alike."""
    xy, ring_of = shapely.get_coordinates(shapely.get_exterior_ring(polygons), return_index=True)
    edge = np.flatnonzero(ring_of[1:] == ring_of[:-1])
    ends = np.stack([xy[edge], xy[edge + 1]], axis=1)  # [edges, end, xy]
    flip = (ends[:, 0, 0] > ends[:, 1, 0]) | (
        (ends[:, 0, 0] == ends[:, 1, 0]) & (ends[:, 0, 1] > ends[:, 1, 1])
    )
    ends[flip] = ends[flip, ::-1]
    rows = ends.reshape(-1, 4)
    order = np.lexsort(rows.T[::-1])
    rows, owner = rows[order], ring_of[edge][order]
    same = (rows[1:] == rows[:-1]).all(axis=1)
    return list(zip(owner[:-1][same].tolist(), owner[1:][same].tolist(), strict=True))


def node_edges(polygons: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Split the polygons' axis-parallel edges at every polygon's vertices lying inside them.

    Parameters
    ----------
    polygons : ndarray of object
        Polygons with integer, non-negative vertices.

    Returns
    -------
    ndarray of object
        The same polygons, each with the extra vertices.
    """
    rings, polygon_of = shapely.get_rings(polygons, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    vertices = xy.astype(np.int64)
    edge_of = np.flatnonzero(ring_of[1:] == ring_of[:-1])  # edge i runs from vertex i to i + 1
    start, stop = vertices[edge_of], vertices[edge_of + 1]
    vertical = _inserts_on_lines(vertices, 0, edge_of, start, stop)
    horizontal = _inserts_on_lines(vertices, 1, edge_of, start, stop)
    owner, rank, points = (np.concatenate(pair) for pair in zip(vertical, horizontal, strict=True))
    if not len(points):
        return polygons
    sizes = np.bincount(owner, minlength=len(xy)) + 1
    first = np.cumsum(sizes) - sizes
    out = np.empty((int(sizes.sum()), 2), dtype=np.float64)
    out[first] = xy
    out[first[owner] + rank] = points
    noded_rings = shapely.linearrings(out, indices=np.repeat(ring_of, sizes))
    noded: npt.NDArray[np.object_] = shapely.polygons(noded_rings, indices=polygon_of)
    return noded


def _inserts_on_lines(
    vertices: npt.NDArray[np.int64],
    axis: int,
    edge_of: npt.NDArray[np.intp],
    start: npt.NDArray[np.int64],
    stop: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """The vertices to insert into the edges along which coordinate ``axis`` is fixed.

    Returns, per inserted vertex, the edge it goes into (the index of the edge's first vertex),
    its place along that edge (1 for the first inserted) and its coordinates.
    """
    along = 1 - axis
    key = np.sort(vertices[:, axis] * _SHIFT + vertices[:, along])
    key = key[np.r_[True, key[1:] != key[:-1]]]
    on_line = (start[:, axis] == stop[:, axis]) & (start[:, along] != stop[:, along])
    start, stop = start[on_line], stop[on_line]
    line = start[:, axis] * _SHIFT
    low = np.minimum(start[:, along], stop[:, along])
    high = np.maximum(start[:, along], stop[:, along])
    first = np.searchsorted(key, line + low, side="right")
    count = np.searchsorted(key, line + high, side="left") - first
    some = count > 0
    first, count = first[some], count[some]
    forward = np.repeat((stop[:, along] > start[:, along])[some], count)
    rank = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count) + 1
    picked = np.where(
        forward,
        np.repeat(first, count) + rank - 1,
        np.repeat(first + count, count) - rank,
    )
    points = np.empty((len(picked), 2), dtype=np.float64)
    points[:, axis], points[:, along] = np.divmod(key[picked], _SHIFT)
    return np.repeat(edge_of[on_line][some], count), rank, points


def drop_collinear(geometries: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Axis-parallel (Multi)Polygons without the vertices that lie straight between their
    neighbours; the shapes are unchanged, and so is each geometry's type.
    """
    polygons, geometry_of = shapely.get_parts(geometries, return_index=True)
    rings, polygon_of = shapely.get_rings(polygons, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    opened = np.r_[ring_of[1:] == ring_of[:-1], False]  # drop each ring's closing vertex
    xy, ring_of = xy[opened], ring_of[opened]
    begin = np.searchsorted(ring_of, ring_of, side="left")
    end = np.searchsorted(ring_of, ring_of, side="right")
    index = np.arange(len(xy))
    before = xy[np.where(index == begin, end - 1, index - 1)]
    after = xy[np.where(index == end - 1, begin, index + 1)]
    straight = ((before == xy) & (xy == after)).any(axis=1)
    rings = shapely.linearrings(xy[~straight], indices=ring_of[~straight])
    polygons = shapely.polygons(rings, indices=polygon_of)
    result: npt.NDArray[np.object_] = np.asarray(geometries, dtype=object).copy()
    multi = shapely.get_type_id(result) == shapely.GeometryType.MULTIPOLYGON
    result[~multi] = polygons[~multi[geometry_of]]
    if multi.any():
        in_multi = multi[geometry_of]
        result[multi] = shapely.multipolygons(
            polygons[in_multi], indices=np.unique(geometry_of[in_multi], return_inverse=True)[1]
        )
    return result
