"""The model contract: TorchScript files that carry their own description.

A geoseg model file is a TorchScript archive (``torch.jit.save``) with a small JSON document
embedded as the extra file ``geoseg.json``::

    {"name": "greenery", "classes": {"1": "vegetation"}, "bands": [1, 2, 3],
     "scale": 0.00392156862745098, "mean": null, "std": null, "tile_size": 512, "overlap": 64,
     "gsd_m": null, "tta": false}

``classes`` maps the model's positive integer labels to names, ``bands`` lists the 1-based raster
bands fed to the model in order, raw pixel values are multiplied by ``scale`` and then
standardised with the optional per-band ``mean`` and ``std``. ``tile_size`` and ``overlap`` (pixels)
are the recommended tiling, ``name`` a label for messages and outputs. The optional ``gsd_m`` is
the ground resolution (metres per pixel) the model was trained for: the pipeline reads each tile
resampled to it and maps the masks back onto the raster's own grid. ``tta: true`` says the model
has a boolean attribute ``tta`` that switches on test-time augmentation (``geoseg run --tta``).

The model's ``forward`` takes a list of float32 tensors ``[C, H, W]`` and returns, per image,
torchvision's detection output: a dict with ``boxes`` ``[N, 4]`` (x0, y0, x1, y1 in pixels),
``labels`` ``[N]`` int64, ``scores`` ``[N]`` and ``masks`` ``[N, 1, H, W]`` probabilities. A
scripted torchvision Mask R-CNN works as is. A model whose instances never overlap may return a
``label_map`` ``[H, W]`` of integers instead of ``masks`` (0 background, ``k`` detection
``k - 1``): one array where masks would take N full-size ones. geoseg's own models do.

Files are never unpickled by Python: a ``torch.save`` file is refused before anything in it is
read, and TorchScript's own loader only rebuilds tensors and TorchScript types.

Reading a file's description needs no torch: the functions that load, save or place a model
import it when called, so a run's flow process, which only reads descriptions, never loads torch
(180 MB and 2.4 s of start-up on a 2-core machine).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
import os
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from geoseg.errors import ModelError, OptionsError, OutputError

if TYPE_CHECKING:
    import torch

SPEC_FILE = "geoseg.json"
"""Name of the extra file in a TorchScript archive that holds the model's description."""

MASK_THRESHOLD = 0.5
"""Mask probability above which a pixel belongs to an instance."""

_KEYS = (
    "name",
    "classes",
    "bands",
    "scale",
    "mean",
    "std",
    "tile_size",
    "overlap",
    "gsd_m",
    "tta",
)
_REQUIRED = ("classes", "bands", "scale")
_PICKLE_PROTOCOL_OPCODE = 0x80
_FIX = "save the model with geoseg.models.contract.package_model (or torch.jit.save)"


@dataclass(frozen=True)
class ModelSpec:
    """What a model file says about itself, validated when built.

    Parameters
    ----------
    name : str
        Label used in messages and outputs.
    path : str
        Absolute path of the model file.
    sha256 : str
        Hex SHA-256 of the file, recorded with results so that they can be traced to the model.
    classes : dict[int, str]
        Positive label ids to unique, non-empty class names.
    bands : tuple[int, ...]
        1-based raster bands fed to the model, in order.
    scale : float
        Factor applied to raw pixel values first (1/255 for 8-bit imagery, 1.0 for raw values).
    mean, std : tuple[float, ...] or None
        Per-band standardisation applied after ``scale``; both or neither, ``std > 0``.
    tile_size, overlap : int or None
        Recommended tile edge and overlap in pixels (of the model's input).
    gsd_m : float or None
        Ground resolution the model expects, metres per pixel; None: any, tiles read as they are.
    tta : bool
        The model switches test-time augmentation on through its ``tta`` attribute.
    """

    name: str
    path: str
    sha256: str
    classes: dict[int, str] = field(hash=False)
    bands: tuple[int, ...]
    scale: float
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tile_size: int | None = None
    overlap: int | None = None
    gsd_m: float | None = None
    tta: bool = False

    def __post_init__(self) -> None:
        where = self.path or "model"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ModelError(f"{where}: the model name must be a non-empty string")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ModelError(f"{where}: sha256 must be 64 lowercase hex digits")
        _check_classes(where, self.classes)
        if not self.bands or not all(_is_int(b) and b >= 1 for b in self.bands):
            raise ModelError(f"{where}: 'bands' must list 1-based band numbers, got {self.bands}")
        if not _is_number(self.scale) or not math.isfinite(self.scale) or self.scale <= 0:
            raise ModelError(f"{where}: 'scale' must be a positive number, got {self.scale!r}")
        if (self.mean is None) != (self.std is None):
            raise ModelError(f"{where}: 'mean' and 'std' must be given together or not at all")
        for key, values in (("mean", self.mean), ("std", self.std)):
            if values is None:
                continue
            if len(values) != len(self.bands):
                raise ModelError(
                    f"{where}: '{key}' has {len(values)} values but the model reads "
                    f"{len(self.bands)} bands"
                )
            if not all(_is_number(v) and math.isfinite(v) for v in values):
                raise ModelError(f"{where}: '{key}' must hold finite numbers, got {values}")
        if self.std is not None and min(self.std) <= 0:
            raise ModelError(f"{where}: 'std' must be positive, got {self.std}")
        if self.gsd_m is not None and not (
            _is_number(self.gsd_m) and math.isfinite(self.gsd_m) and self.gsd_m > 0
        ):
            raise ModelError(f"{where}: 'gsd_m' must be a positive number, got {self.gsd_m!r}")
        if not isinstance(self.tta, bool):
            raise ModelError(f"{where}: 'tta' must be true or false, got {self.tta!r}")
        if self.tile_size is not None and not (_is_int(self.tile_size) and self.tile_size > 0):
            raise ModelError(f"{where}: 'tile_size' must be a positive integer")
        if self.overlap is not None and not (_is_int(self.overlap) and self.overlap >= 0):
            raise ModelError(f"{where}: 'overlap' must be a non-negative integer")
        if (
            self.tile_size is not None
            and self.overlap is not None
            and 2 * self.overlap >= self.tile_size
        ):
            raise ModelError(
                f"{where}: 'overlap' {self.overlap} must be less than half of "
                f"'tile_size' {self.tile_size}"
            )


def read_model_spec(path: str | Path) -> ModelSpec:
    """Read and validate the ``geoseg.json`` embedded in a model file, without loading the model.

    Only the zip directory and the JSON entry are read; nothing in the file is unpickled.

    Raises
    ------
    ModelError
        One line naming the file and what is wrong: missing, empty, not TorchScript, a pickle
        written by ``torch.save``, no ``geoseg.json``, invalid JSON or a bad key.
    """
    file = Path(path).expanduser().resolve()
    document = _read_document(file)
    return _spec_from_document(document, str(file), _sha256(file))


def load_model(
    path: str | Path, device: torch.device, tta: bool = False
) -> tuple[torch.jit.ScriptModule, ModelSpec]:
    """Load a model file onto ``device`` in eval mode, once per process and ``tta`` setting.

    ``tta`` switches on the model's test-time augmentation (models whose spec says ``tta``).

    Results are cached on the resolved path, the file's size and modification time and the
    device, so each worker process loads a model once rather than once per tile, and a file
    replaced on disk is loaded afresh.

    Raises
    ------
    ModelError
        The file breaks the contract (see `read_model_spec`), TorchScript cannot load it, or
        ``tta`` is asked of a model without test-time augmentation.
    """
    file = Path(path).expanduser().resolve()
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise ModelError(f"{file}: model file not found") from None
    except OSError as exc:
        raise ModelError(f"{file}: cannot read the model file: {exc.strerror}") from None
    return _load_cached(str(file), stat.st_size, stat.st_mtime_ns, str(device), tta)


def package_model(
    module: torch.nn.Module,
    path: str | Path,
    *,
    classes: Mapping[int, str],
    bands: Sequence[int],
    scale: float,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    name: str | None = None,
    gsd_m: float | None = None,
    tta: bool = False,
) -> ModelSpec:
    """Script ``module``, embed its ``geoseg.json`` and save it as a geoseg model file.

    The description is validated before anything is written, and the file is written to a
    temporary name and renamed into place, so a failure never leaves a half-written model.

    Examples
    --------
    >>> spec = package_model(net, "roofs.pt", classes={1: "building"}, bands=(1, 2, 3),
    ...                      scale=1 / 255, tile_size=512, overlap=64)  # doctest: +SKIP

    Raises
    ------
    ModelError
        The description is invalid or the module cannot be compiled with ``torch.jit.script``.
    OutputError
        The file cannot be written.
    """
    target = Path(path).expanduser().resolve()
    document: dict[str, object] = {
        "name": name if name is not None else target.stem,
        "classes": {str(k): v for k, v in classes.items()},
        "bands": list(bands),
        "scale": scale,
        "mean": None if mean is None else list(mean),
        "std": None if std is None else list(std),
        "tile_size": tile_size,
        "overlap": overlap,
        "gsd_m": gsd_m,
        "tta": tta,
    }
    _spec_from_document(document, str(target), "0" * 64)
    import torch

    try:
        scripted = torch.jit.script(module)
    except Exception as exc:  # TorchScript raises many unrelated types for unsupported code
        raise ModelError(
            f"{target}: {type(module).__name__} cannot be compiled with torch.jit.script: "
            f"{last_line(exc)}"
        ) from exc
    if not target.parent.is_dir():
        raise OutputError(f"{target}: folder {target.parent} does not exist; create it first")
    # A sibling name that torch creates itself, so the file gets the usual permissions.
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        torch.jit.save(scripted, str(temporary), _extra_files={SPEC_FILE: json.dumps(document)})
        os.replace(temporary, target)
    except (OSError, RuntimeError) as exc:
        raise OutputError(f"{target}: cannot write the model file: {last_line(exc)}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return read_model_spec(target)


def select_device(preference: str = "auto") -> torch.device:
    """Pick the torch device for inference.

    ``"auto"`` takes CUDA when PyTorch sees a GPU and the CPU otherwise; ``"cpu"``, ``"cuda"`` and
    ``"cuda:N"`` are explicit.

    Raises
    ------
    OptionsError
        An unknown preference, or CUDA requested where PyTorch sees no CUDA device.
    """
    import torch

    choice = preference.strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or (choice.startswith("cuda:") and choice[5:].isdigit()):
        if not torch.cuda.is_available():
            raise OptionsError(
                f"device {preference!r} was requested but this PyTorch ({torch.__version__}) "
                "sees no CUDA device; use --device cpu or --device auto"
            )
        device = torch.device(choice)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionsError(
                f"device {preference!r} does not exist: PyTorch sees "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    raise OptionsError(f"device must be auto, cpu, cuda or cuda:N, got {preference!r}")


def cuda_device_count() -> int:
    """How many CUDA devices PyTorch sees.

    A CPU-only build of PyTorch (its version ends in ``+cpu``) sees none: that is answered
    without importing torch, which a process that only plans the work can then do without.
    """
    if importlib.metadata.version("torch").endswith("+cpu"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@functools.lru_cache(maxsize=8)
def _load_cached(
    file: str, size: int, mtime_ns: int, device: str, tta: bool
) -> tuple[torch.jit.ScriptModule, ModelSpec]:
    import torch

    from geoseg.models.precision import native_bf16

    spec = read_model_spec(file)
    check_tta(spec, tta)
    try:
        # torch.jit.load carries no type annotations; it returns a ScriptModule.
        model = torch.jit.load(file, map_location=torch.device(device))  # type: ignore[no-untyped-call]
    except (torch.jit.Error, RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{file}: TorchScript cannot load the model: {last_line(exc)}") from None
    scripted: torch.jit.ScriptModule = model.eval()
    on = torch.device(device)
    if on.type == "cpu" and getattr(scripted, "precision", None) == "auto" and not native_bf16(on):
        # A geoseg segmenter's "auto" is bfloat16 on any CPU; where it is emulated, float32 wins.
        scripted.precision = "fp32"
    if spec.tta:
        scripted.tta = tta
    return scripted, spec


def check_tta(spec: ModelSpec, tta: bool) -> None:
    """Refuse test-time augmentation for a model that does not offer it."""
    if tta and not spec.tta:
        raise ModelError(
            f"{spec.path}: model {spec.name!r} has no test-time augmentation "
            '(its geoseg.json lacks "tta": true); run without --tta'
        )


def _read_document(file: Path) -> object:
    if not file.exists():
        raise ModelError(f"{file}: model file not found")
    if not file.is_file():
        raise ModelError(f"{file}: is not a file; pass the path of a .pt model file")
    if file.stat().st_size == 0:
        raise ModelError(f"{file}: model file is empty")
    if not zipfile.is_zipfile(file):
        with file.open("rb") as handle:
            first = handle.read(1)
        if first and first[0] == _PICKLE_PROTOCOL_OPCODE:
            raise ModelError(_pickle_message(file))
        raise ModelError(f"{file}: not a TorchScript model file (not a zip archive); {_FIX}")
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            is_torchscript = any(n.endswith("/constants.pkl") for n in names) and any(
                "/code/" in n for n in names
            )
            if not is_torchscript:
                if any(n.endswith("data.pkl") for n in names):
                    raise ModelError(_pickle_message(file))
                raise ModelError(f"{file}: a zip archive but not a TorchScript model; {_FIX}")
            entries = [n for n in names if n.split("/")[1:] == ["extra", SPEC_FILE]]
            if not entries:
                raise ModelError(
                    f"{file}: TorchScript model without an embedded {SPEC_FILE}; {_FIX}"
                )
            raw = archive.read(entries[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{file}: corrupt model file: {last_line(exc)}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{file}: embedded {SPEC_FILE} is not valid JSON: {exc}") from None


def _spec_from_document(document: object, where: str, sha256: str) -> ModelSpec:
    if not isinstance(document, dict):
        raise ModelError(f"{where}: {SPEC_FILE} must be a JSON object")
    unknown = sorted(set(document) - set(_KEYS))
    if unknown:
        raise ModelError(
            f"{where}: {SPEC_FILE} has unknown key {unknown[0]!r}; "
            f"known keys are {', '.join(_KEYS)}"
        )
    for key in _REQUIRED:
        if key not in document:
            raise ModelError(f"{where}: {SPEC_FILE} lacks the required key {key!r}")
    name = document.get("name")
    if name is not None and not isinstance(name, str):
        raise ModelError(f"{where}: {SPEC_FILE} key 'name' must be a string")
    scale = document["scale"]
    if not _is_number(scale):
        raise ModelError(f"{where}: {SPEC_FILE} key 'scale' must be a number, got {scale!r}")
    return ModelSpec(
        name=name if name else Path(where).stem,
        path=where,
        sha256=sha256,
        classes=_classes_from_json(where, document["classes"]),
        bands=tuple(_int_list(where, "bands", document["bands"])),
        scale=float(scale),
        mean=_optional_floats(where, "mean", document.get("mean")),
        std=_optional_floats(where, "std", document.get("std")),
        tile_size=_optional_int(where, "tile_size", document.get("tile_size")),
        overlap=_optional_int(where, "overlap", document.get("overlap")),
        gsd_m=_optional_number(where, "gsd_m", document.get("gsd_m")),
        tta=_flag(where, "tta", document.get("tta", False)),
    )


def _optional_number(where: str, key: str, value: object) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise ModelError(f"{where}: {SPEC_FILE} key {key!r} must be a number, got {value!r}")
    return float(value)


def _flag(where: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"{where}: {SPEC_FILE} key {key!r} must be true or false, got {value!r}")
    return value


def _classes_from_json(where: str, value: object) -> dict[int, str]:
    if not isinstance(value, dict) or not value:
        raise ModelError(
            f"{where}: {SPEC_FILE} key 'classes' must be a non-empty object such as "
            '{"1": "building"}'
        )
    classes: dict[int, str] = {}
    for key, label in value.items():
        if not key.isdigit() or str(int(key)) != key:
            raise ModelError(
                f"{where}: {SPEC_FILE} key 'classes' has id {key!r}; ids must be positive integers"
            )
        if not isinstance(label, str):
            raise ModelError(f"{where}: {SPEC_FILE} key 'classes' has a non-string name for {key}")
        classes[int(key)] = label
    return classes


def _check_classes(where: str, classes: object) -> None:
    if not isinstance(classes, dict) or not classes:
        raise ModelError(f"{where}: 'classes' must map at least one class id to a name")
    names = list(classes.values())
    for class_id, name in classes.items():
        if not _is_int(class_id) or class_id < 1:
            raise ModelError(f"{where}: class id {class_id!r} must be a positive integer")
        if not isinstance(name, str) or not name.strip():
            raise ModelError(f"{where}: class {class_id} needs a non-empty name")
        if names.count(name) > 1:
            raise ModelError(f"{where}: class name {name!r} is used more than once")


def _int_list(where: str, key: str, value: object) -> list[int]:
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise ModelError(f"{where}: {SPEC_FILE} key {key!r} must be a list of integers")
    return list(value)


def _optional_floats(where: str, key: str, value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(_is_number(v) for v in value):
        raise ModelError(f"{where}: {SPEC_FILE} key {key!r} must be a list of numbers or null")
    return tuple(float(v) for v in value)


def _optional_int(where: str, key: str, value: object) -> int | None:
    if value is None:
        return None
    if not _is_int(value):
        raise ModelError(f"{where}: {SPEC_FILE} key {key!r} must be an integer or null")
    return int(value)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pickle_message(file: Path) -> str:
    return (
        f"{file}: a pickled PyTorch file (torch.save); pickled models are not loaded because "
        f"unpickling can run arbitrary code; {_FIX}"
    )


def last_line(exc: BaseException) -> str:
    """Last non-empty line of an exception message: TorchScript puts its traceback first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
