"""Synthetic overhead scenes with instance labels, for pre-training the built-in model.

`generate_scene` paints, at a ground resolution between 0.1 and 1 m, a ground of soil and dry
grass crossed by roads and sometimes a river, then lawns (green textures, mowing stripes,
irregular outlines, some sharing an edge), bridges (long decks across the river or a road, with
shadows), buildings (tin, tile and concrete roofs, gable shading, L-shapes, terraces of touching
units, shadows) and distractors: trees whose crowns hide parts of lawns and roofs, cars, bare
soil and water. Sizes are set in metres, so objects scale with the resolution. Objects are
laid out as a site plan would have them: buildings stand apart from each other (a terrace's
units share walls), off roads, water and bridges; lawns lie off roads, water and each other
(a pair of another tone, mown in different directions, shares an edge); bridges over one
river stay apart, trees stand on land, cars drive under a deck unseen. Every instance can be
told from its neighbours in the image: separately placed objects are at least 2 pixels apart
and touching ones differ (a terrace's wall tops, a lawn's tone), for a model cannot learn to
split what the pixels do not show. The instance map holds what is visible from above (a crown
over a lawn or a roof cuts it; a roof cuts the lawn it stands in).
Colours were matched by eye to the Kampala (0.15 m), Zurich (0.5 m) and Manila (0.1 m)
rasters in ``shared/data``.

Scenes are reproducible: the same seed and arguments give the same scene.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import numpy.typing as npt
import rasterio.features
import shapely
import shapely.affinity
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)
from shapely.geometry import LineString, Point, Polygon, box

from geoseg.models.datasets import LabelledImage

CLASSES = {1: "lawn", 2: "bridge", 3: "building"}
"""Class ids and names of the synthetic scenes (and of the shipped model)."""

LAWN, BRIDGE, BUILDING = 1, 2, 3

GSD_RANGE_M = (0.1, 1.0)
"""Ground resolutions drawn when none is given, metres per pixel (log-uniform)."""

_MIN_VISIBLE_PX = 12
_MIN_GAP_PX = 2.0
"""Least gap between separately placed lawns or buildings, so that they are apart in pixels
too (at 1 m a 0.5 m gap would vanish)."""
_PLACEMENT_TRIES = 12
"""Positions tried for a lawn or a building before it is left out of a crowded scene."""

_ROOFS = np.array(
    [
        (0.70, 0.71, 0.72),  # new galvanised iron
        (0.55, 0.56, 0.56),  # weathered iron
        (0.52, 0.33, 0.26),  # rusty iron
        (0.62, 0.33, 0.24),  # clay tile
        (0.40, 0.25, 0.22),  # dark tile
        (0.33, 0.34, 0.36),  # dark concrete or slate
        (0.83, 0.82, 0.80),  # white membrane
        (0.64, 0.60, 0.54),  # concrete slab
        (0.28, 0.38, 0.48),  # blue painted iron
        (0.35, 0.43, 0.33),  # green painted iron
        (0.62, 0.22, 0.25),  # maroon painted iron
        (0.76, 0.44, 0.30),  # orange tile
    ]
)


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    """One synthetic scene.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 ``[3, H, W]`` RGB.
    instances : numpy.ndarray
        int32 ``[H, W]``; 0 background, ``i`` instance ``i`` (1..N, every one with pixels).
    classes : numpy.ndarray
        int64 ``[N]``, class id (see `CLASSES`) of instance ``i`` at index ``i - 1``.
    gsd_m : float
        Ground resolution, metres per pixel.
    """

    image: npt.NDArray[np.uint8]
    instances: npt.NDArray[np.int32]
    classes: npt.NDArray[np.int64]
    gsd_m: float

    @property
    def masks(self) -> npt.NDArray[np.bool_]:
        """bool ``[N, H, W]``, one mask per instance."""
        ids = np.arange(1, len(self.classes) + 1, dtype=np.int32)
        masks: npt.NDArray[np.bool_] = self.instances[None] == ids[:, None, None]
        return masks


class _Canvas:
    """Image, instance map and the painting helpers, all in pixel units of one scene."""

    def __init__(self, rng: np.random.Generator, size: int, gsd_m: float) -> None:
        self.rng = rng
        self.size = size
        self.gsd = gsd_m
        self.image = np.zeros((size, size, 3), dtype=np.float32)
        self.instances = np.zeros((size, size), dtype=np.int32)
        self.classes: list[int] = []
        angle = rng.uniform(0, 2 * math.pi)
        self.sun = (math.cos(angle), math.sin(angle))
        self.shadow_strength = rng.uniform(0.35, 0.6)
        # Shadow length per metre of height: the sun stands high in the tropics, lower elsewhere.
        self.shadow_length = rng.uniform(0.1, 0.6)
        self._noise: dict[tuple[int, int], npt.NDArray[np.float32]] = {}
        self.rows, self.cols = np.mgrid[0:size, 0:size].astype(np.float32)
        self.taken: dict[str, list[shapely.Geometry]] = {}

    def take(self, kind: str, shape: shapely.Geometry) -> None:
        """Record ``shape`` as ground that ``kind`` (road, water, bridge, lawn, building) holds."""
        self.taken.setdefault(kind, []).append(shape)

    def place(
        self, shape: shapely.Geometry, avoid: tuple[str, ...], gap: float, margin: float
    ) -> tuple[float, float] | None:
        """A random point to move ``shape`` (drawn around the origin) to, where it stays
        ``gap`` pixels clear of the ground that ``avoid`` kinds hold; None if no try finds one."""
        for _ in range(_PLACEMENT_TRIES):
            point = self.random_point(margin)
            if self.clear(shapely.affinity.translate(shape, *point), avoid, gap):
                return point
        return None

    def clear(self, shape: shapely.Geometry, avoid: tuple[str, ...], gap: float) -> bool:
        """Whether ``shape`` stays more than ``gap`` pixels from the ground ``avoid`` kinds hold."""
        held = [taken for kind in avoid for taken in self.taken.get(kind, [])]
        return not shapely.dwithin(shape, held, gap).any()

    def px(self, metres: float) -> float:
        return metres / self.gsd

    def mask(self, shape: shapely.Geometry) -> npt.NDArray[np.bool_]:
        if shape.is_empty:
            return np.zeros((self.size, self.size), dtype=bool)
        mask: npt.NDArray[np.bool_] = rasterio.features.geometry_mask(
            [shape], (self.size, self.size), rasterio.Affine.identity(), invert=True
        )
        return mask

    def noise(self, cell_m: float, octaves: int = 3) -> npt.NDArray[np.float32]:
        """Fractal value noise in about -1..1 with features of ``cell_m`` metres and finer.

        Fields are cached per scene by feature size (in half-octave steps) and handed out
        shifted by a random offset: objects get different texture at a fraction of the cost.
        """
        cell = max(self.px(cell_m), 1.0)
        key = (round(2 * math.log2(cell)), octaves)
        field = self._noise.get(key)
        if field is None:
            field = self._fractal(2 ** (key[0] / 2), octaves)
            self._noise[key] = field
        shift = self.rng.integers(0, self.size, 2)
        rolled: npt.NDArray[np.float32] = np.roll(field, (int(shift[0]), int(shift[1])), (0, 1))
        return rolled if self.rng.random() < 0.5 else rolled.T.copy()

    def _fractal(self, cell: float, octaves: int) -> npt.NDArray[np.float32]:
        total = np.zeros((self.size, self.size), dtype=np.float32)
        weight = 1.0
        for _ in range(octaves):
            cells = max(int(self.size / cell) + 2, 2)
            grid = torch.from_numpy(self.rng.standard_normal((1, 1, cells, cells), np.float32))
            up = F.interpolate(
                grid, size=(self.size, self.size), mode="bilinear", align_corners=True
            )
            total += weight * up[0, 0].numpy()
            weight *= 0.5
            cell /= 2.0
            if cell < 1.0:
                break
        clipped: npt.NDArray[np.float32] = np.clip(total / 1.5, -1.0, 1.0)
        return clipped

    def paint(
        self,
        region: npt.NDArray[np.bool_],
        colour: npt.ArrayLike,
        texture: npt.NDArray[np.float32] | float = 0.0,
    ) -> None:
        base = np.asarray(colour, dtype=np.float32)
        shade = 1.0 + (texture[region] if isinstance(texture, np.ndarray) else texture)
        self.image[region] = base[None, :] * np.asarray(shade, np.float32).reshape(-1, 1)

    def label(self, region: npt.NDArray[np.bool_], class_id: int) -> None:
        self.classes.append(class_id)
        self.instances[region] = len(self.classes)

    def unlabel(self, region: npt.NDArray[np.bool_]) -> None:
        self.instances[region] = 0

    def shadow(self, shape: shapely.Geometry, height_m: float) -> None:
        offset = self.px(height_m) * self.shadow_length
        cast = shapely.affinity.translate(shape, self.sun[0] * offset, self.sun[1] * offset)
        swept = shapely.union(shapely.convex_hull(shapely.union(shape, cast)), cast)
        dark = self.mask(shapely.difference(swept, shape))
        self.image[dark] *= np.array([0.9, 0.95, 1.1], np.float32) * self.shadow_strength

    def random_point(self, margin: float = 0.0) -> tuple[float, float]:
        low, high = -margin, self.size + margin
        return float(self.rng.uniform(low, high)), float(self.rng.uniform(low, high))


def _rectangle(cx: float, cy: float, length: float, width: float, angle_deg: float) -> Polygon:
    shape = box(cx - length / 2, cy - width / 2, cx + length / 2, cy + width / 2)
    rotated: Polygon = shapely.affinity.rotate(shape, angle_deg, origin=(cx, cy))
    return rotated


def _blob(rng: np.random.Generator, cx: float, cy: float, radius: float, points: int) -> Polygon:
    """An irregular star-shaped outline with jittered radii."""
    angles = np.sort(rng.uniform(0, 2 * math.pi, points))
    radii = radius * rng.uniform(0.65, 1.0, points)
    coords = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    return Polygon(coords).buffer(0)


def _paint_ground(canvas: _Canvas) -> None:
    rng = canvas.rng
    soil = np.array(rng.choice([(0.62, 0.45, 0.34), (0.55, 0.47, 0.38), (0.50, 0.46, 0.40)]))
    dry = np.array((0.45, 0.46, 0.30)) * rng.uniform(0.85, 1.1)
    green = np.array((0.26, 0.36, 0.18)) * rng.uniform(0.8, 1.15)
    mix = canvas.noise(rng.uniform(8, 40), 4)
    cover = rng.uniform(-0.4, 0.6)
    weight_veg = np.clip((mix + cover) * 1.5, 0, 1)[..., None]
    weight_green = np.clip(canvas.noise(20, 2) * 1.5 + 0.2, 0, 1)[..., None]
    vegetation = dry * (1 - weight_green) + green * weight_green
    ground = soil * (1 - weight_veg) + vegetation * weight_veg
    grain = canvas.noise(0.8, 3)[..., None] * 0.12
    canvas.image[:] = ground * (1 + grain)


def _paint_roads(canvas: _Canvas) -> list[LineString]:
    rng = canvas.rng
    roads = []
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = canvas.random_point()
        angle = rng.uniform(0, math.pi)
        reach = canvas.size * 1.5
        line = LineString(
            [
                (x0 - reach * math.cos(angle), y0 - reach * math.sin(angle)),
                (x0 + reach * math.cos(angle), y0 + reach * math.sin(angle)),
            ]
        )
        width = canvas.px(rng.uniform(3.5, 12))
        surface = line.buffer(width / 2, cap_style="flat")
        canvas.take("road", surface)
        asphalt = rng.random() < 0.6
        colour = (
            np.full(3, rng.uniform(0.3, 0.5)) + np.array((0.0, 0.0, 0.01))
            if asphalt
            else np.array((0.66, 0.50, 0.39)) * rng.uniform(0.85, 1.1)
        )
        canvas.paint(canvas.mask(surface), colour, canvas.noise(1.5, 2) * 0.08)
        if asphalt and width > 10:
            dash = canvas.mask(line.buffer(canvas.px(0.08) + 0.4, cap_style="flat"))
            canvas.paint(dash, (0.8, 0.8, 0.78))
        roads.append(line)
    return roads


def _paint_river(canvas: _Canvas) -> tuple[LineString, float] | None:
    rng = canvas.rng
    if rng.random() > 0.35:
        return None
    x0, y0 = canvas.random_point()
    angle = rng.uniform(0, math.pi)
    reach = canvas.size * 1.5
    steps = np.linspace(-reach, reach, 24)
    wiggle = np.cumsum(rng.normal(0, canvas.size * 0.02, len(steps)))
    coords = [
        (
            x0 + s * math.cos(angle) - w * math.sin(angle),
            y0 + s * math.sin(angle) + w * math.cos(angle),
        )
        for s, w in zip(steps, wiggle, strict=True)
    ]
    line = LineString(coords)
    width = canvas.px(rng.uniform(12, 60))
    bank = line.buffer(width / 2 + canvas.px(2.5))
    canvas.take("water", bank)
    canvas.paint(canvas.mask(bank), (0.45, 0.42, 0.33), canvas.noise(2, 2) * 0.1)
    water = rng.choice(
        [(0.16, 0.24, 0.26), (0.27, 0.31, 0.24), (0.35, 0.33, 0.27), (0.2, 0.3, 0.38)]
    )
    canvas.paint(canvas.mask(line.buffer(width / 2)), water, canvas.noise(6, 3) * 0.12)
    return line, width


def _paint_bridges(
    canvas: _Canvas, river: tuple[LineString, float] | None, roads: list[LineString]
) -> None:
    rng = canvas.rng
    crossings: list[tuple[LineString, float]] = []
    if river is not None:
        crossings += [river] * int(rng.integers(1, 3))
    if roads and rng.random() < 0.4:
        crossings.append((roads[0], canvas.px(12)))
    for line, gap in crossings:
        length = gap + canvas.px(rng.uniform(10, 30))
        width = canvas.px(rng.uniform(4, 16))
        placed = _deck(canvas, line, length, width)
        if placed is None:
            continue
        deck, at, direction = placed
        canvas.take("bridge", deck)
        canvas.shadow(deck, rng.uniform(4, 10))
        deck_mask = canvas.mask(deck)
        colour = np.full(3, rng.uniform(0.45, 0.72)) * (1.0, 0.99, 0.96)
        canvas.paint(deck_mask, colour, canvas.noise(1, 2) * 0.07)
        rail = canvas.px(0.5)
        if width > 4 * rail and rail >= 0.7:
            edges = deck.exterior.buffer(rail)
            canvas.paint(canvas.mask(edges) & deck_mask, colour * rng.uniform(0.6, 1.3))
        if canvas.px(5) > 3:  # lane markings show only when pixels are small enough
            spine = _rectangle(at.x, at.y, length * 0.9, max(canvas.px(0.12), 0.6), direction)
            canvas.paint(canvas.mask(spine), (0.85, 0.83, 0.7))
        canvas.unlabel(deck_mask)
        canvas.label(deck_mask, BRIDGE)


def _deck(
    canvas: _Canvas, line: LineString, length: float, width: float
) -> tuple[Polygon, Point, float] | None:
    """A deck across ``line`` near its middle, 2 m clear of the decks already built (two
    bridges never overlap), with its centre and direction; None if no try finds room."""
    rng = canvas.rng
    for _ in range(_PLACEMENT_TRIES):
        at = line.interpolate(rng.uniform(0.3, 0.7), normalized=True)
        ahead = line.interpolate(line.project(at) + 2.0)
        direction = math.degrees(math.atan2(ahead.y - at.y, ahead.x - at.x)) + 90
        direction += rng.normal(0, 12)
        deck = _rectangle(at.x, at.y, length, width, direction)
        if canvas.clear(deck, ("bridge",), canvas.px(2)):
            return deck, at, direction
    return None


def _stripes(canvas: _Canvas) -> npt.NDArray[np.float32] | float:
    rng = canvas.rng
    period = canvas.px(rng.uniform(0.8, 3.0))
    if period < 3 or rng.random() < 0.3:
        return 0.0
    angle = rng.uniform(0, math.pi)
    rows, cols = canvas.rows, canvas.cols
    phase = (cols * math.cos(angle) + rows * math.sin(angle)) * (2 * math.pi / period)
    wave: npt.NDArray[np.float32] = (np.sign(np.sin(phase)) * rng.uniform(0.04, 0.1)).astype(
        np.float32
    )
    return wave


def _paint_lawns(canvas: _Canvas) -> None:
    rng = canvas.rng
    area_m2 = (canvas.size * canvas.gsd) ** 2
    count = int(rng.poisson(min(max(area_m2 / 1500, 1.0), 8)))
    for _ in range(count):
        radius = canvas.px(rng.uniform(4, 30))
        if rng.random() < 0.5:
            shape = _blob(rng, 0.0, 0.0, radius, int(rng.integers(5, 12)))
        else:
            shape = _rectangle(
                0.0, 0.0, 2 * radius, radius * rng.uniform(0.5, 1.5), rng.uniform(0, 180)
            )
            shape = shape.buffer(-radius * 0.1).buffer(radius * 0.1)
        gap = max(canvas.px(1.0), _MIN_GAP_PX)
        at = canvas.place(shape, ("road", "water", "lawn"), gap, canvas.px(5))
        if at is None:
            continue
        shape = shapely.affinity.translate(shape, *at)
        canvas.take("lawn", shape)
        parts = [shape]
        if rng.random() < 0.35:  # two lawns sharing a border, mown in different directions
            cut = _rectangle(*at, 4 * radius, 4 * radius, rng.uniform(0, 180))
            half = shapely.affinity.translate(cut, *_unit(rng, 2 * radius))
            parts = [shapely.intersection(shape, half), shapely.difference(shape, half)]
        base = np.array((0.30, 0.45, 0.20)) * rng.uniform(0.75, 1.2) + rng.normal(0, 0.025, 3)
        base *= rng.uniform(0.9, 1.1, 3)
        # Neighbouring lawns differ in tone (watering, mowing, grass), at any resolution.
        tones = [1.0, 1.0 + rng.choice((-1, 1)) * rng.uniform(0.12, 0.25)]
        for part, tone in zip(parts, tones, strict=False):
            region = canvas.mask(part)
            if region.sum() < _MIN_VISIBLE_PX:
                continue
            colour = base * tone
            texture = canvas.noise(rng.uniform(1, 6), 3) * rng.uniform(0.06, 0.15)
            stripes = _stripes(canvas)
            canvas.paint(region, colour, texture + stripes)
            canvas.label(region, LAWN)


def _unit(rng: np.random.Generator, length: float) -> tuple[float, float]:
    angle = rng.uniform(0, 2 * math.pi)
    return length * math.cos(angle), length * math.sin(angle)


def _paint_roof(
    canvas: _Canvas, shape: Polygon, axis_deg: float, colour: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    rng = canvas.rng
    region = canvas.mask(shape)
    texture = canvas.noise(rng.uniform(0.5, 3), 2) * rng.uniform(0.03, 0.1)
    if rng.random() < 0.7:  # gable or hip roof: the two slopes catch different light
        centre = shape.centroid
        rows, cols = canvas.rows, canvas.cols
        normal = math.radians(axis_deg + 90)
        side = (cols - centre.x) * math.cos(normal) + (rows - centre.y) * math.sin(normal)
        contrast = rng.uniform(0.05, 0.25) * np.sign(
            math.cos(normal) * canvas.sun[0] + math.sin(normal) * canvas.sun[1] + 1e-3
        )
        texture = texture + np.where(side > 0, contrast, -contrast).astype(np.float32)
    if canvas.px(0.1) >= 0.5 and rng.random() < 0.5:  # corrugation visible at fine resolution
        rows, cols = canvas.rows, canvas.cols
        along = math.radians(axis_deg)
        phase = (cols * math.cos(along) + rows * math.sin(along)) * (2 * math.pi / canvas.px(0.15))
        texture = texture + (np.sin(phase) * 0.03).astype(np.float32)
    canvas.paint(region, colour, texture)
    edge = canvas.mask(shape.exterior.buffer(max(canvas.px(0.15), 0.5))) & region
    canvas.image[edge] *= rng.uniform(0.75, 1.15)
    return region


def _paint_buildings(canvas: _Canvas) -> None:
    rng = canvas.rng
    area_m2 = (canvas.size * canvas.gsd) ** 2
    count = int(rng.poisson(min(max(area_m2 / 400, 1.5), 18)))
    for _ in range(count):
        length = canvas.px(rng.uniform(5, 28))
        width = min(canvas.px(rng.uniform(4, 14)), length)
        angle = rng.uniform(0, 180)
        height = rng.uniform(3, 12)
        footprint = _rectangle(0.0, 0.0, length, width, angle)  # placed below
        kind = rng.random()
        if kind < 0.25:  # L-shape
            wing_len = width * rng.uniform(1.0, 2.2)
            wing = _rectangle(length / 2 - width / 2, wing_len / 2, width, wing_len, 0)
            wing = shapely.affinity.rotate(wing, angle, origin=(0.0, 0.0))
            footprint = shapely.union(footprint, wing)
        units: list[Polygon] = [footprint]
        if kind > 0.75 and length > width * 1.5:  # terrace of touching units
            pieces = int(rng.integers(2, 5))
            step = length / pieces
            units = [
                _rectangle(
                    (i - (pieces - 1) / 2) * step * math.cos(math.radians(angle)),
                    (i - (pieces - 1) / 2) * step * math.sin(math.radians(angle)),
                    step,
                    width,
                    angle,
                )
                for i in range(pieces)
            ]
        gap = max(canvas.px(rng.uniform(0.5, 4)), _MIN_GAP_PX)
        at = canvas.place(
            shapely.union_all(units), ("road", "water", "bridge", "building"), gap, canvas.px(4)
        )
        if at is None:
            continue
        units = [shapely.affinity.translate(unit, *at) for unit in units]
        outline = shapely.union_all(units)
        canvas.take("building", outline)
        canvas.shadow(outline, height)
        base = _ROOFS[rng.integers(len(_ROOFS))]
        regions = []
        for unit in units:
            colour = base if rng.random() < 0.5 else _ROOFS[rng.integers(len(_ROOFS))]
            colour = np.clip(colour * rng.uniform(0.85, 1.12) + rng.normal(0, 0.02, 3), 0, 1)
            regions.append(_paint_roof(canvas, unit, angle, colour))
        _paint_party_walls(canvas, units)
        for region in regions:
            if region.sum() >= _MIN_VISIBLE_PX:
                canvas.unlabel(region)
                canvas.label(region, BUILDING)


def _paint_party_walls(canvas: _Canvas, units: list[Polygon]) -> None:
    """Paint the wall tops between a terrace's neighbouring units, lighter or darker than the
    roofs, at least a pixel and a half wide: the seam a labeller separates units by, without
    which touching units of one roof colour cannot be told apart."""
    rng = canvas.rng
    width = max(canvas.px(0.3), 1.5)
    for first, second in itertools.pairwise(units):
        seam = shapely.intersection(first.buffer(width / 2), second.buffer(width / 2))
        wall = canvas.mask(seam) & canvas.mask(shapely.union(first, second))
        shade = rng.uniform(0.55, 0.75) if rng.random() < 0.5 else rng.uniform(1.25, 1.45)
        canvas.image[wall] = np.clip(canvas.image[wall] * shade, 0, 1)


def _paint_trees(canvas: _Canvas) -> None:
    rng = canvas.rng
    area_m2 = (canvas.size * canvas.gsd) ** 2
    count = int(rng.poisson(min(max(area_m2 / 300, 2.0), 40)))
    for _ in range(count):
        radius = canvas.px(rng.uniform(1.5, 7))
        crown = _blob(rng, 0.0, 0.0, radius, int(rng.integers(7, 14))).buffer(radius * 0.15)
        at = canvas.place(crown, ("water", "bridge"), 0.0, 0.0)
        if at is None:
            continue
        cx, cy = at
        crown = shapely.affinity.translate(crown, cx, cy)
        canvas.shadow(crown, rng.uniform(3, 12))
        region = canvas.mask(crown)
        colour = np.array((0.19, 0.29, 0.12)) * rng.uniform(0.7, 1.5)
        leaves = canvas.noise(rng.uniform(0.4, 1.2), 3) * 0.35
        rows, cols = canvas.rows, canvas.cols
        lit = ((cols - cx) * -canvas.sun[0] + (rows - cy) * -canvas.sun[1]) / max(radius, 1.0)
        canvas.paint(region, colour, leaves + np.clip(lit, -1, 1).astype(np.float32) * 0.25)
        canvas.unlabel(region)


def _paint_cars(canvas: _Canvas, roads: list[LineString]) -> None:
    rng = canvas.rng
    if canvas.px(4.5) < 3:
        return
    for road in roads:
        for _ in range(int(rng.integers(0, 6))):
            at = road.interpolate(rng.uniform(0, 1), normalized=True)
            ahead = road.interpolate(road.project(at) + 1.0)
            angle = math.degrees(math.atan2(ahead.y - at.y, ahead.x - at.x))
            car = _rectangle(
                at.x + rng.normal(0, canvas.px(1.5)),
                at.y + rng.normal(0, canvas.px(1.5)),
                canvas.px(4.5),
                canvas.px(1.8),
                angle,
            )
            if not canvas.clear(car, ("bridge",), 0.0):
                continue  # the road runs under the deck
            canvas.shadow(car, 1.5)
            colour = rng.choice(
                [
                    (0.85, 0.85, 0.85),
                    (0.1, 0.1, 0.1),
                    (0.6, 0.1, 0.1),
                    (0.2, 0.3, 0.6),
                    (0.6, 0.6, 0.62),
                ]
            )
            region = canvas.mask(car)
            canvas.paint(region, colour, 0.0)
            canvas.unlabel(region)


def _finish(canvas: _Canvas) -> npt.NDArray[np.uint8]:
    rng = canvas.rng
    image = torch.from_numpy(canvas.image).permute(2, 0, 1)[None]
    # Optics and resampling soften edges by about a pixel.
    kernel = torch.tensor([0.25, 0.5, 0.25])
    weights = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3).contiguous()
    image = F.conv2d(F.pad(image, [1, 1, 1, 1], mode="replicate"), weights, groups=3)[0]
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, 3).astype(np.float32))[:, None, None]
    brightness = float(rng.uniform(0.85, 1.15))
    image = image * gain * brightness + float(rng.uniform(-0.03, 0.03))
    image = image + torch.from_numpy(rng.normal(0, 0.012, image.shape).astype(np.float32))
    out: npt.NDArray[np.uint8] = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return out


def generate_scene(seed: int, size: int = 256, gsd_m: float | None = None) -> SyntheticScene:
    """Paint one scene of ``size`` x ``size`` pixels at ``gsd_m`` metres per pixel.

    ``gsd_m`` defaults to a log-uniform draw from `GSD_RANGE_M`. Instances whose visible part
    is smaller than 12 pixels are left unlabelled.

    Examples
    --------
    >>> scene = generate_scene(7, size=128, gsd_m=0.3)
    >>> scene.image.shape, scene.instances.shape
    ((3, 128, 128), (128, 128))
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    rng = np.random.default_rng(seed)
    if gsd_m is None:
        gsd_m = float(math.exp(rng.uniform(*np.log(GSD_RANGE_M))))
    if gsd_m <= 0:
        raise ValueError(f"gsd_m must be positive, got {gsd_m}")
    canvas = _Canvas(rng, size, gsd_m)
    _paint_ground(canvas)
    roads = _paint_roads(canvas)
    river = _paint_river(canvas)
    _paint_lawns(canvas)
    _paint_bridges(canvas, river, roads)
    _paint_buildings(canvas)
    _paint_trees(canvas)
    _paint_cars(canvas, roads)
    image = _finish(canvas)
    classes = np.asarray(canvas.classes, dtype=np.int64)
    sizes = np.bincount(canvas.instances.ravel(), minlength=len(classes) + 1)
    keep = sizes >= _MIN_VISIBLE_PX
    keep[0] = False
    lookup = np.zeros(len(classes) + 1, dtype=np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return SyntheticScene(
        image=image,
        instances=lookup[canvas.instances],
        classes=classes[keep[1:]],
        gsd_m=gsd_m,
    )


def synthetic_images(
    count: int, size: int = 384, seed: int = 0, workers: int = 1
) -> list[LabelledImage]:
    """``count`` synthetic scenes as labelled images (scene ``i`` uses seed ``seed + i``).

    ``workers`` > 1 paints scenes in that many processes; the scenes are the same either way.
    The processes are spawned, not forked: a fork of a process whose torch or Dask threads hold
    locks can hang. Each runs one torch thread: a pool of processes each starting a thread per
    core oversubscribes a many-core machine.
    """
    seeds = range(seed, seed + count)
    if workers > 1 and count > 1:
        with ProcessPoolExecutor(
            workers,
            mp_context=get_context("spawn"),
            initializer=torch.set_num_threads,
            initargs=(1,),
        ) as pool:
            scenes = list(pool.map(generate_scene, seeds, [size] * count, chunksize=4))
    else:
        scenes = [generate_scene(scene_seed, size) for scene_seed in seeds]
    return [
        LabelledImage(
            image=scene.image,
            instances=scene.instances,
            classes=scene.classes,
            valid=np.ones(scene.instances.shape, dtype=bool),
            name=f"synthetic_{scene_seed}",
            gsd_m=scene.gsd_m,
        )
        for scene_seed, scene in zip(seeds, scenes, strict=True)
    ]
