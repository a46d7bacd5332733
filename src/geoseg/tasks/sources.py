"""Turn what a user names as input into the list of rasters to segment.

An input is a raster (a path or anything GDAL opens: ``s3://``, ``https://``, ``/vsi...``), a
folder (its rasters, not recursive), a glob pattern, a text file listing one raster per line, or
a STAC Item or ItemCollection JSON file whose assets are picked by key.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pystac

from geoseg.errors import RasterError

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".jp2", ".img", ".ntf"})
"""Files a folder input contributes; anything GDAL reads can still be named directly."""

DEFAULT_STAC_ASSET = "visual"

_NETWORK_PREFIXES = tuple(
    f"/vsi{name}" for name in ("curl", "s3", "gs", "az", "adls", "oss", "swift", "webhdfs")
)

_USER_INFO = re.compile(r"(://)[^/@\s]+@")
_SECRET_QUERY = re.compile(
    r"([?&](?:x-amz-[a-z-]*|[a-z_-]*(?:signature|sig|token|key|password|secret|credential)"
    r"[a-z_-]*)=)[^&\s)]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the user info of URLs and secret-looking query values replaced by ``***``.

    Applied to every source written to an output or shown in a message: a URL may carry
    credentials (``https://user:password@host/x.tif``, a presigned ``?X-Amz-Signature=...``).

    >>> redact("https://me:pw@host/x.tif?X-Amz-Signature=abc&v=1")
    'https://***@host/x.tif?X-Amz-Signature=***&v=1'
    """
    return _SECRET_QUERY.sub(r"\1***", _USER_INFO.sub(r"\1***@", text))


def source_name(source: str) -> str:
    """A source's file name without any URL query or fragment, for names, ids and messages.

    A presigned URL's query can hold ``/`` (``X-Amz-Credential=AKIA.../aws4_request``), so the
    query goes before the last path segment is taken.

    >>> source_name("https://host/a/scene.tif?X-Amz-Credential=K/1/s3&X-Amz-Signature=abc")
    'scene.tif'
    """
    if "://" in source:
        source = source.split("?", 1)[0].split("#", 1)[0]
    return Path(source).name


def is_network(source: str) -> bool:
    """Whether GDAL reads a source over the network (HTTP, S3 and other object stores)."""
    return "://" in source or source.startswith(_NETWORK_PREFIXES)


def is_remote(source: str) -> bool:
    """Whether a source is a URI or a GDAL virtual path rather than a local file."""
    return "://" in source or source.startswith("/vsi")


def expand_inputs(inputs: Sequence[str], stac_asset: str = DEFAULT_STAC_ASSET) -> tuple[str, ...]:
    """The rasters named by ``inputs``, in the order given, each once.

    Raises
    ------
    RasterError
        A folder without rasters, a pattern matching nothing, or a STAC document without the
        asset.
    """
    rasters = [raster for item in inputs for raster in expand_one(item, stac_asset)]
    return tuple(dict.fromkeys(rasters))


def expand_one(item: str, stac_asset: str) -> Iterator[str]:
    """The rasters one input names."""
    path = Path(item)
    if is_remote(item):
        yield item
    elif path.is_dir():
        rasters = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        if not rasters:
            suffixes = ", ".join(sorted(RASTER_SUFFIXES))
            raise RasterError(f"{item}: folder holds no rasters ({suffixes})")
        yield from map(str, rasters)
    elif not path.exists() and glob.has_magic(item):
        matches = sorted(glob.glob(item))
        if not matches:
            raise RasterError(f"{item}: no file matches this pattern")
        yield from matches
    elif path.suffix.lower() == ".txt" and path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in (line.strip() for line in lines):
            if line and not line.startswith("#"):
                yield (
                    line if is_remote(line) or Path(line).is_absolute() else str(path.parent / line)
                )
    elif path.suffix.lower() == ".json" and path.is_file():
        yield from stac_assets(path, stac_asset)
    else:
        yield item


def stac_assets(path: Path, key: str) -> Iterator[str]:
    """The hrefs of asset ``key`` of a STAC Item or ItemCollection file (relative to it)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RasterError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("type") not in (
        "Feature",
        "FeatureCollection",
    ):
        raise RasterError(f"{path}: not a STAC Item or ItemCollection")
    try:
        if document["type"] == "Feature":
            items = [pystac.Item.from_dict(document)]
        else:
            items = list(pystac.ItemCollection.from_dict(document))
    except (KeyError, ValueError, TypeError, pystac.STACError) as exc:
        raise RasterError(f"{path}: not a valid STAC Item or ItemCollection ({exc})") from exc
    for item in items:
        if key not in item.assets:
            keys = ", ".join(sorted(item.assets)) or "none"
            raise RasterError(
                f"{path}: item {item.id} has no asset {key!r} (it has: {keys}); pass --asset"
            )
        href = item.assets[key].href
        yield href if is_remote(href) or Path(href).is_absolute() else str(path.parent / href)
