"""Tests for geoseg.tasks.reading: refusing unusable rasters and reading tiles with their mask."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS

from geoseg.errors import RasterError
from geoseg.tasks.reading import describe_raster, read_tile
from geoseg.tasks.tiling import Tile, plan_tiles
from tests.conftest import MakeRaster

UTM = Affine(0.5, 0, 500_000, 0, -0.5, 40_000)


def whole(width: int, height: int) -> Tile:
    """One tile covering a whole raster."""
    return Tile(0, 0, 0, width, height, (0, 0, width, height))


def read(path: Path, tile: Tile, bands: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as src:
        return read_tile(src, tile, bands)


def write_plain(path: Path, array: np.ndarray, **profile: object) -> Path:
    """Write a GeoTIFF with exactly the georeferencing given (none unless asked)."""
    count, height, width = array.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype=array.dtype.name,
            **profile,
        ) as dst:
            dst.write(array)
    return path


def refused(path: Path, bands: tuple[int, ...] = (1, 2)) -> str:
    """The one-line message describe_raster refuses a raster with."""
    with pytest.raises(RasterError) as info:
        describe_raster(str(path), bands)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- refused ----------------------------------------------------------------------------------


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path / "absent.tif") == f"{tmp_path / 'absent.tif'} does not exist"


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.tif", b""), ("notes.tif", b"pixels are elsewhere\n"), ("half.tif", b"II*\x00")],
)
def test_files_that_are_not_rasters_are_refused(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    message = refused(path)

    assert message.startswith(f"{path}: cannot be read as a raster (")
    assert "GDAL reads" in message


def test_a_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "scene.tif"
    folder.mkdir()

    assert "scene.tif: cannot be read as a raster" in refused(folder)


def test_a_raster_without_crs_is_refused(make_raster: MakeRaster) -> None:
    path = make_raster(np.zeros((2, 20, 20), np.uint8), name="nocrs.tif", crs=None)

    assert refused(path) == (
        "nocrs.tif has no CRS; georeference the raster first (gdal_edit.py -a_srs EPSG:<code>)"
    )


def test_a_raster_without_geotransform_is_refused(tmp_path: Path) -> None:
    path = write_plain(tmp_path / "grid.tif", np.zeros((2, 20, 20), np.uint8), crs="EPSG:32636")

    assert refused(path) == "grid.tif has no geotransform; georeference the raster first"


def test_a_raster_georeferenced_by_gcps_only_is_refused(tmp_path: Path) -> None:
    path = write_plain(tmp_path / "gcps.tif", np.zeros((2, 20, 20), np.uint8))
    gcps = [
        GroundControlPoint(row=0, col=0, x=500_000, y=40_000),
        GroundControlPoint(row=0, col=20, x=500_010, y=40_000),
        GroundControlPoint(row=20, col=0, x=500_000, y=39_990),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "r+") as dst:
            dst.gcps = (gcps, CRS.from_epsg(32636))

    message = refused(path)

    assert message.startswith("gcps.tif is georeferenced by ground control points only")
    assert "gdalwarp" in message


@pytest.mark.parametrize(
    "transform",
    [
        Affine.translation(500_000, 40_000) @ Affine.rotation(30) @ Affine.scale(0.5, -0.5),
        Affine(0.5, 0.1, 500_000, 0, -0.5, 40_000),
    ],
    ids=["rotated", "sheared"],
)
def test_a_rotated_or_sheared_raster_is_refused_with_gdalwarp_as_the_fix(
    make_raster: MakeRaster, transform: Affine
) -> None:
    path = make_raster(np.zeros((2, 20, 20), np.uint8), name="tilted.tif", transform=transform)

    message = refused(path)

    assert message.startswith("tilted.tif has a rotated or sheared geotransform")
    assert "gdalwarp" in message


def test_a_zero_pixel_size_is_refused(make_raster: MakeRaster) -> None:
    flat = Affine(0.5, 0, 500_000, 0, 0, 40_000)
    path = make_raster(np.zeros((2, 20, 20), np.uint8), name="flat.tif", transform=flat)

    assert refused(path).startswith("flat.tif has a geotransform with a zero pixel size")


def test_too_few_bands_are_refused(make_raster: MakeRaster) -> None:
    path = make_raster(np.zeros((20, 20), np.uint8), name="oneband.tif")

    assert refused(path, (1, 2)).startswith(
        "oneband.tif has 1 band(s) but the model reads band(s) 1, 2; "
    )


def test_complex_pixels_are_refused(make_raster: MakeRaster) -> None:
    path = make_raster(np.ones((2, 20, 20), np.complex64), name="slc.tif")

    message = refused(path, (2,))

    assert message.startswith("slc.tif has complex pixels (complex64) in band(s) 2;")


def test_damaged_pixels_raise_a_raster_error_naming_the_file(make_raster: MakeRaster) -> None:
    # Random pixels do not compress, so the middle of the file is DEFLATE tile data, not header.
    pixels = np.random.default_rng(1).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    path = make_raster(pixels, name="damaged.tif")
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : 2 * len(data) // 3] = b"\xff" * (len(data) // 3)
    path.write_bytes(bytes(data))
    info = describe_raster(str(path), (1, 2))  # the header is intact

    with pytest.raises(RasterError) as error:
        read(path, whole(info.width, info.height), (1, 2))

    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("damaged.tif: pixels of window (0, 0, 64, 64) cannot be read (")
    assert "See previous exception" not in message
    assert message.endswith("the file is damaged or truncated, recreate or download it again")


def test_a_truncated_file_raises_a_raster_error(make_raster: MakeRaster) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    path = make_raster(pixels, name="cut.tif")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    info = describe_raster(str(path), (1, 2))

    with pytest.raises(RasterError, match=r"^cut\.tif: pixels of window"):
        read(path, whole(info.width, info.height), (1, 2))


# --- accepted ---------------------------------------------------------------------------------


def test_describe_raster_keeps_size_crs_and_transform(make_raster: MakeRaster) -> None:
    path = make_raster(np.zeros((3, 20, 30), np.uint8))

    info = describe_raster(str(path), (1, 3))

    assert (info.width, info.height, info.count) == (30, 20, 3)
    assert CRS.from_wkt(info.crs_wkt).to_epsg() == 32636
    assert info.transform == UTM
    assert info.name == "scene.tif"


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64]
)
def test_pixels_come_back_as_float32_values(make_raster: MakeRaster, dtype: type) -> None:
    values = np.arange(2 * 20 * 24).reshape(2, 20, 24) % 250
    if np.dtype(dtype).kind == "f":
        values = values * 0.25 - 3.0
    values = values.astype(dtype)
    path = make_raster(values)
    tile = Tile(0, 5, 3, 16, 16, (5, 3, 21, 19))

    pixels, valid = read(path, tile, (1, 2))

    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, values[:, 3:19, 5:21].astype(np.float32))
    assert valid.shape == (16, 16)
    assert valid.all()


def test_one_band_rasters_work(make_raster: MakeRaster) -> None:
    path = make_raster(np.full((20, 20), 7, np.uint8))
    describe_raster(str(path), (1,))

    pixels, valid = read(path, whole(20, 20), (1,))

    assert pixels.shape == (1, 20, 20)
    assert (pixels == 7).all()
    assert valid.all()


def test_bands_are_read_in_the_order_the_model_asks(make_raster: MakeRaster) -> None:
    bands = np.stack([np.full((20, 20), 10 * (band + 1), np.uint16) for band in range(5)])
    path = make_raster(bands)
    describe_raster(str(path), (5, 2, 4))

    pixels, _ = read(path, whole(20, 20), (5, 2, 4))

    assert pixels[:, 0, 0].tolist() == [50, 20, 40]


def test_declared_nodata_in_any_band_read_is_invalid(make_raster: MakeRaster) -> None:
    data = np.ones((3, 20, 20), np.uint16)
    data[0, 2, 3] = 65535
    data[2, 4, 5] = 65535
    path = make_raster(data, nodata=65535)

    _, valid = read(path, whole(20, 20), (1, 2))
    _, valid_band_2 = read(path, whole(20, 20), (2,))

    assert np.argwhere(~valid).tolist() == [[2, 3]]  # band 3's nodata is not read
    assert valid_band_2.all()


def test_an_internal_mask_is_the_validity(make_raster: MakeRaster) -> None:
    path = make_raster(np.ones((2, 20, 20), np.uint8))
    mask = np.full((20, 20), 255, np.uint8)
    mask[:4, 10:] = 0
    with rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)

    _, valid = read(path, whole(20, 20), (1, 2))

    np.testing.assert_array_equal(valid, mask > 0)


def test_an_alpha_band_is_the_validity(tmp_path: Path) -> None:
    rgba = np.full((4, 20, 20), 100, np.uint8)
    rgba[3] = 255
    rgba[3, 5:7, 5:9] = 0
    path = write_plain(
        tmp_path / "rgba.tif", rgba, crs="EPSG:32636", transform=UTM, photometric="RGB", alpha="YES"
    )

    _, valid = read(path, whole(20, 20), (1, 2, 3))

    np.testing.assert_array_equal(valid, rgba[3] > 0)


def test_non_finite_floats_are_invalid_with_or_without_declared_nodata(
    make_raster: MakeRaster,
) -> None:
    data = np.ones((2, 20, 20), np.float32)
    data[1, 3, 4] = np.nan
    data[0, 6, 7] = np.inf
    plain = make_raster(data, name="plain.tif")
    declared = make_raster(data, name="declared.tif", nodata=np.nan)

    for path in (plain, declared):
        _, valid = read(path, whole(20, 20), (1, 2))
        assert np.argwhere(~valid).tolist() == [[3, 4], [6, 7]]


def test_a_raster_one_pixel_wide_is_read_tile_by_tile(make_raster: MakeRaster) -> None:
    column = np.arange(2 * 40, dtype=np.uint8).reshape(2, 40, 1)
    path = make_raster(column)
    info = describe_raster(str(path), (1, 2))

    tiles = plan_tiles(info.width, info.height, 16, 4)
    reads = [read(path, tile, (1, 2)) for tile in tiles]

    assert [tile.width for tile in tiles] == [1] * len(tiles)
    for tile, (pixels, valid) in zip(tiles, reads, strict=True):
        np.testing.assert_array_equal(pixels, column[:, tile.row_off : tile.row_off + 16])
        assert valid.all()


def test_strips_are_read_like_tiles(make_raster: MakeRaster) -> None:
    data = np.arange(2 * 40 * 30, dtype=np.uint16).reshape(2, 40, 30)
    path = make_raster(data, tiled=False)
    with rasterio.open(path) as src:
        assert not src.profile.get("tiled", False)

    pixels, _ = read(path, Tile(0, 7, 11, 16, 16, (7, 11, 23, 27)), (2, 1))

    np.testing.assert_array_equal(pixels, data[::-1, 11:27, 7:23])


def test_north_down_rasters_with_negative_coordinates_are_accepted(
    make_raster: MakeRaster,
) -> None:
    # Row 0 is the southernmost row; coordinates west of Greenwich and south of the equator.
    north_down = Affine(1e-5, 0, -47.9, 0, 1e-5, -15.8)
    data = np.arange(2 * 20 * 20, dtype=np.uint16).reshape(2, 20, 20)
    path = make_raster(data, crs="EPSG:4326", transform=north_down)

    info = describe_raster(str(path), (1, 2))
    pixels, valid = read(path, whole(20, 20), (1, 2))

    assert info.transform == north_down
    np.testing.assert_array_equal(pixels, data)
    assert valid.all()


def test_a_tile_read_at_half_size_averages_blocks_and_keeps_the_mask(
    make_raster: MakeRaster,
) -> None:
    values = np.arange(16 * 16, dtype=np.float32).reshape(1, 16, 16)
    values[0, :4, :4] = -9999
    path = make_raster(values, nodata=-9999)

    with rasterio.open(path) as src:
        pixels, valid = read_tile(src, whole(16, 16), (1,), out_shape=(8, 8))

    blocks = values[0].reshape(8, 2, 8, 2).mean(axis=(1, 3))
    assert pixels.shape == (1, 8, 8)
    np.testing.assert_allclose(pixels[0][2:, 2:], blocks[2:, 2:])
    assert not valid[:2, :2].any()
    assert valid.sum() == 64 - 4


def test_a_tile_read_at_twice_the_size_interpolates(make_raster: MakeRaster) -> None:
    path = make_raster(np.full((1, 8, 8), 40, np.uint8))

    with rasterio.open(path) as src:
        pixels, valid = read_tile(src, whole(8, 8), (1,), out_shape=(16, 16))

    assert pixels.shape == (1, 16, 16)
    assert (pixels == 40).all()
    assert valid.all()
