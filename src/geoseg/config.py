"""A run's configuration: every option of ``geoseg run``, validated when built."""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pyproj import CRS
from pyproj.exceptions import CRSError

from geoseg.errors import OptionsError
from geoseg.tasks.destination import output_location
from geoseg.tasks.sources import DEFAULT_STAC_ASSET, redact
from geoseg.tasks.tiling import check_tiling, raster_tiling

DEFAULT_TILE_SIZE = 512
DEFAULT_OVERLAP_PX = 64
DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class RunConfig:
    """Options of one run, from the CLI or the Python API.

    Attributes
    ----------
    inputs : tuple[str, ...]
        Rasters to segment: paths or anything GDAL opens.
    output : Path or str
        The GeoPackage to write: a local path, or an ``s3://bucket/key.gpkg`` URI (a string),
        written locally and uploaded when complete.
    model : str or None
        A TorchScript model file following the model contract; None for the built-in model.
    tile_size, overlap_px : int or None
        Tiling in pixels; None takes the model's recommendation, else 512 and 64.
    batch_size : int
        Tiles per model call and per task.
    workers : int or None
        Processes of the local Dask cluster (default 2); conflicts with ``dask_address``.
    dask_address : str or None
        An existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``; its workers must see the inputs
        and the output's folder.
    score_threshold : float
        Instances scoring below it are dropped, in [0, 1].
    min_area_m2 : float
        Objects smaller than this ground area are dropped.
    simplify_m : float
        Simplification tolerance in metres on the ground; 0 keeps the exact pixel outlines.
    overwrite : bool
        Replace an existing output.
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    threads_per_worker : int or None
        Torch threads in each worker; None splits this machine's cores between local workers.
    keep_cache : bool
        Keep the batch results beside the output after success (they always stay after a crash).
    clear_cache : bool
        Delete batch results of earlier, interrupted runs first instead of resuming from them.
    stac_asset : str
        The asset key taken from STAC Items given as inputs.
    crs : str or None
        The output CRS (``EPSG:4326``, WKT, PROJ JSON, ...); None takes the first raster's. Objects
        are measured in their raster's own CRS before any reprojection.
    fail_fast : bool
        Stop at the first raster that fails; by default, with several rasters, a failed raster
        is recorded in the output's ``failures`` table and the others are still segmented.
    cache_dir : Path or None
        Where batch results (and the staging copy of an S3 output) live; None puts them beside a
        local output, or in ``~/.cache/geoseg`` for an S3 output.
    gsd_m : float or None
        Ground resolution (metres per pixel) to run the model at, instead of its own ``gsd_m``.
    tta : bool
        Switch on the model's test-time augmentation (flips and rotations averaged).
    """

    inputs: tuple[str, ...]
    output: Path | str
    model: str | None = None
    tile_size: int | None = None
    overlap_px: int | None = None
    batch_size: int = 8
    workers: int | None = None
    dask_address: str | None = None
    score_threshold: float = 0.5
    min_area_m2: float = 0.0
    simplify_m: float = 0.0
    overwrite: bool = False
    device: str = "auto"
    threads_per_worker: int | None = field(default=None)
    keep_cache: bool = False
    clear_cache: bool = False
    stac_asset: str = DEFAULT_STAC_ASSET
    crs: str | None = None
    fail_fast: bool = False
    cache_dir: Path | None = None
    gsd_m: float | None = None
    tta: bool = False

    def __post_init__(self) -> None:
        if not self.inputs:
            raise OptionsError("no input raster given")
        # Frozen, but a Path would collapse the "//" of an s3:// URI: keep those as strings.
        object.__setattr__(self, "output", output_location(self.output))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if self.workers is not None and self.dask_address is not None:
            raise OptionsError(
                "--workers and --dask-address conflict: --workers sizes a local cluster, "
                "--dask-address uses an existing one; pass only one"
            )
        positive = {
            "--batch-size": self.batch_size,
            "--workers": self.workers,
            "--threads-per-worker": self.threads_per_worker,
        }
        for name, value in positive.items():
            if value is not None and value < 1:
                raise OptionsError(f"{name} {value}: must be at least 1")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise OptionsError(f"--score-threshold {self.score_threshold}: must be within [0, 1]")
        for name, number in (
            ("--min-area-m2", self.min_area_m2),
            ("--simplify-m", self.simplify_m),
        ):
            if not math.isfinite(number) or number < 0:
                raise OptionsError(f"{name} {number}: must be a number, 0 or more")
        if self.gsd_m is not None and not (math.isfinite(self.gsd_m) and self.gsd_m > 0):
            raise OptionsError(f"--gsd {self.gsd_m}: must be a positive number of metres")
        if self.crs is not None:
            try:
                CRS.from_user_input(self.crs)
            except CRSError as exc:
                raise OptionsError(f"--crs {self.crs}: not a CRS pyproj knows ({exc})") from exc
        if self.device not in ("auto", "cpu", "cuda"):
            raise OptionsError(f"--device {self.device}: choose auto, cpu or cuda")
        if self.tile_size is not None or self.overlap_px is not None:
            check_tiling(
                self.tile_size if self.tile_size is not None else 2**30,
                self.overlap_px if self.overlap_px is not None else 1,
            )

    def tiling(
        self, recommended_tile: int | None, recommended_overlap: int | None, scale: float = 1.0
    ) -> tuple[int, int]:
        """Tile size and overlap in raster pixels: the options, else the model's, else defaults.

        The model's recommendation is in its own pixels: with ``scale`` model pixels per raster
        pixel (tiles resampled to the model's ground resolution) it is converted to the raster's.
        """
        model_tile = recommended_tile or DEFAULT_TILE_SIZE
        model_overlap = (
            recommended_overlap if recommended_overlap is not None else DEFAULT_OVERLAP_PX
        )
        if scale != 1.0:
            model_tile, model_overlap = raster_tiling(model_tile, model_overlap, scale)
        tile_size = self.tile_size or model_tile
        overlap_px = self.overlap_px
        if overlap_px is None:
            overlap_px = min(model_overlap, tile_size // 2)
        check_tiling(tile_size, overlap_px)
        return tile_size, overlap_px


RUN_FILE_KEYS: dict[str, tuple[str, tuple[type, ...]]] = {
    "inputs": ("inputs", (list,)),
    "output": ("output", (str,)),
    "model": ("model", (str,)),
    "tile_size": ("tile_size", (int,)),
    "overlap": ("overlap_px", (int,)),
    "batch_size": ("batch_size", (int,)),
    "workers": ("workers", (int,)),
    "dask_address": ("dask_address", (str,)),
    "threads_per_worker": ("threads_per_worker", (int,)),
    "score_threshold": ("score_threshold", (int, float)),
    "min_area_m2": ("min_area_m2", (int, float)),
    "simplify_m": ("simplify_m", (int, float)),
    "device": ("device", (str,)),
    "overwrite": ("overwrite", (bool,)),
    "keep_cache": ("keep_cache", (bool,)),
    "clear_cache": ("clear_cache", (bool,)),
    "asset": ("stac_asset", (str,)),
    "crs": ("crs", (str,)),
    "fail_fast": ("fail_fast", (bool,)),
    "gsd": ("gsd_m", (int, float)),
    "tta": ("tta", (bool,)),
    "cache_dir": ("cache_dir", (str,)),
}
"""Keys of a run file (the options of ``geoseg run``, with underscores) and their fields."""


def read_run_file(path: Path) -> dict[str, object]:
    """Read a run file (TOML, or JSON as in an output's ``run`` table) into RunConfig fields.

    Unknown keys and values of the wrong type are refused, naming the key. Paths in the file
    are taken as written (relative to the current folder, like on the command line).

    Raises
    ------
    OptionsError
        The file is missing, unparsable, or has an unknown key or a wrongly typed value.
    """
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise OptionsError(f"{path}: cannot read the run file ({exc.strerror})") from exc
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise OptionsError(f"{path}: not valid TOML or JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise OptionsError(f"{path}: expected a table of options at the top level")
    return run_file_fields(document, str(path))


def run_file_fields(document: dict[str, object], source: str) -> dict[str, object]:
    """Check a run file's options (a parsed file, or a deployment's parameters); RunConfig fields.

    ``source`` names where the options came from in error messages.

    Raises
    ------
    OptionsError
        An unknown key or a wrongly typed value, naming ``source`` and the key.
    """
    fields: dict[str, object] = {}
    for key, value in document.items():
        if key not in RUN_FILE_KEYS:
            known = ", ".join(sorted(RUN_FILE_KEYS))
            raise OptionsError(f"{source}: unknown key {key!r}; known keys: {known}")
        field_name, types = RUN_FILE_KEYS[key]
        if isinstance(value, str) and key == "inputs":
            value = [value]
        wrong_bool = isinstance(value, bool) and bool not in types
        if value is not None and (not isinstance(value, types) or wrong_bool):
            expected = " or ".join(t.__name__ for t in types)
            raise OptionsError(f"{source}: {key} = {value!r} should be {expected}")
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise OptionsError(f"{source}: inputs should be a list of paths or URIs")
            value = tuple(value)
        if key == "output" and isinstance(value, str):
            value = output_location(value)
        elif key == "cache_dir" and isinstance(value, str):
            value = Path(value)
        fields[field_name] = value
    return fields


def run_file_document(config: RunConfig) -> dict[str, object]:
    """A run file's content for ``config``: with it, ``geoseg run --config`` repeats the run."""
    values = vars(config)
    document = {key: values[field_name] for key, (field_name, _) in RUN_FILE_KEYS.items()}
    document["inputs"] = [redact(source) for source in config.inputs]
    document["output"] = redact(str(config.output))
    if config.cache_dir is not None:
        document["cache_dir"] = str(config.cache_dir)
    return {key: value for key, value in document.items() if value is not None}
