"""Model files: packaging, reading, loading and every way a file can break the contract."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from geoseg.errors import ModelError, OptionsError
from geoseg.models.contract import (
    ModelSpec,
    cuda_device_count,
    load_model,
    package_model,
    read_model_spec,
    select_device,
)
from tests.oracle_model import DEFAULT_CLASSES, write_oracle_model


class Doubler(torch.nn.Module):
    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return [2 * image for image in images]


class Marker:
    """Unpickling this creates a file: proof that code in a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.fixture
def oracle(tmp_path: Path) -> Path:
    return write_oracle_model(tmp_path / "oracle.pt")


def torchscript_with_document(path: Path, document: object | bytes) -> Path:
    """A valid TorchScript file whose geoseg.json is ``document`` (JSON-encoded unless bytes)."""
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    torch.jit.save(torch.jit.script(Doubler()), str(path), _extra_files={"geoseg.json": raw})
    return path


VALID = {"classes": {"1": "lawn"}, "bands": [1, 2, 3], "scale": 1 / 255}


def test_package_model_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "doubler.pt"
    spec = package_model(
        Doubler(),
        path,
        classes={1: "lawn", 7: "roof"},
        bands=(3, 2, 1),
        scale=0.5,
        mean=(0.1, 0.2, 0.3),
        std=(1.0, 2.0, 3.0),
        tile_size=256,
        overlap=16,
        name="doubler",
        gsd_m=0.15,
    )
    assert spec == read_model_spec(path)
    assert (spec.gsd_m, spec.tta) == (0.15, False)
    assert spec.classes == {1: "lawn", 7: "roof"}
    assert (spec.bands, spec.scale, spec.mean, spec.std) == (
        (3, 2, 1),
        0.5,
        (0.1, 0.2, 0.3),
        (1, 2, 3),
    )
    assert (spec.tile_size, spec.overlap, spec.name, spec.path) == (256, 16, "doubler", str(path))
    model, loaded = load_model(path, torch.device("cpu"))
    assert loaded == spec
    assert not model.training
    assert torch.equal(model([torch.ones(3, 2, 2)])[0], torch.full((3, 2, 2), 2.0))


def test_package_model_defaults_name_to_file_stem(tmp_path: Path) -> None:
    spec = package_model(
        Doubler(), tmp_path / "roofs-v2.pt", classes={1: "roof"}, bands=[1], scale=1
    )
    assert (spec.name, spec.mean, spec.std, spec.tile_size, spec.overlap) == (
        "roofs-v2",
        None,
        None,
        None,
        None,
    )


def test_package_model_validates_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    with pytest.raises(ModelError, match="'std' must be positive"):
        package_model(Doubler(), path, classes={1: "a"}, bands=(1,), scale=1, mean=[0], std=[0])
    assert not path.exists()


def test_package_model_rejects_unscriptable_module(tmp_path: Path) -> None:
    class Untyped(torch.nn.Module):
        def forward(self, images: list[torch.Tensor]) -> object:
            return {1, 2}

    with pytest.raises(ModelError, match=r"Untyped cannot be compiled with torch\.jit\.script"):
        package_model(Untyped(), tmp_path / "u.pt", classes={1: "a"}, bands=(1,), scale=1)


def test_sha256_identifies_the_file(oracle: Path) -> None:
    import hashlib

    assert read_model_spec(oracle).sha256 == hashlib.sha256(oracle.read_bytes()).hexdigest()


def test_load_model_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = write_oracle_model(tmp_path / "oracle.pt")
    first, _ = load_model(path, torch.device("cpu"))
    assert load_model(str(path), torch.device("cpu"))[0] is first
    write_oracle_model(path, classes={1: "lawn"})
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse file-system clocks
    second, spec = load_model(path, torch.device("cpu"))
    assert second is not first
    assert spec.classes == {1: "lawn"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "model file not found"),
        (b"", "model file is empty"),
        (bytes(range(256)) * 4, "not a TorchScript model file"),
    ],
)
def test_unusable_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    for call in (lambda: read_model_spec(path), lambda: load_model(path, torch.device("cpu"))):
        with pytest.raises(ModelError, match=message) as caught:
            call()
        assert str(path) in str(caught.value)
        assert "\n" not in str(caught.value)


def test_zip_that_is_not_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/readme.txt", "hello")
    with pytest.raises(ModelError, match="a zip archive but not a TorchScript model"):
        read_model_spec(path)


def test_truncated_torchscript(tmp_path: Path, oracle: Path) -> None:
    path = tmp_path / "cut.pt"
    path.write_bytes(oracle.read_bytes()[: oracle.stat().st_size // 2])
    with pytest.raises(ModelError, match=str(path)):
        load_model(path, torch.device("cpu"))


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_save_pickles_are_refused(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "model.pt"
    torch.save(Doubler(), path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ModelError, match="pickled models are not loaded") as caught:
        load_model(path, torch.device("cpu"))
    assert "torch.jit.save" in str(caught.value)


def test_marker_payload_runs_when_unpickled(tmp_path: Path) -> None:
    """Positive control for the test below: the payload does run when Python unpickles it."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Marker(marker), protocol=2)).close()
    assert marker.exists()


@pytest.mark.parametrize("form", ["legacy pickle", "torch.save zip", "inside TorchScript"])
def test_malicious_pickle_never_runs(tmp_path: Path, oracle: Path, form: str) -> None:
    marker = tmp_path / "marker"
    payload = pickle.dumps(Marker(marker), protocol=2)
    assert not marker.exists()
    path = tmp_path / "evil.pt"
    if form == "legacy pickle":
        path.write_bytes(payload)
    elif form == "torch.save zip":
        torch.save({"weights": Marker(marker)}, path)
    else:
        # A genuine TorchScript archive whose data.pkl is replaced by the payload: this one gets
        # past geoseg's checks and reaches torch.jit.load, whose unpickler only knows torch types.
        with zipfile.ZipFile(oracle) as source, zipfile.ZipFile(path, "w") as target:
            for name in source.namelist():
                data = payload if name.endswith("/data.pkl") else source.read(name)
                target.writestr(name, data)
    with pytest.raises(ModelError, match=str(path)):
        load_model(path, torch.device("cpu"))
    assert not marker.exists()


def test_torchscript_without_document(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(Doubler()), str(path))
    with pytest.raises(ModelError, match=r"without an embedded geoseg\.json"):
        load_model(path, torch.device("cpu"))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ([1, 2], "must be a JSON object"),
        ({"bands": [1], "scale": 1}, "required key 'classes'"),
        ({"classes": {"1": "a"}, "scale": 1}, "required key 'bands'"),
        ({"classes": {"1": "a"}, "bands": [1]}, "required key 'scale'"),
        ({**VALID, "tilesize": 512}, "unknown key 'tilesize'"),
        ({**VALID, "classes": ["lawn"]}, "key 'classes' must be a non-empty object"),
        ({**VALID, "classes": {}}, "key 'classes' must be a non-empty object"),
        ({**VALID, "classes": {"lawn": 1}}, "ids must be positive integers"),
        ({**VALID, "classes": {"0": "lawn"}}, "class id 0 must be a positive integer"),
        ({**VALID, "classes": {"1": 5}}, "key 'classes' has a non-string name"),
        ({**VALID, "classes": {"1": " "}}, "class 1 needs a non-empty name"),
        ({**VALID, "classes": {"1": "a", "2": "a"}}, "class name 'a' is used more than once"),
        ({**VALID, "bands": "rgb"}, "key 'bands' must be a list of integers"),
        ({**VALID, "bands": [1.5]}, "key 'bands' must be a list of integers"),
        ({**VALID, "bands": []}, "'bands' must list 1-based band numbers"),
        ({**VALID, "bands": [0, 1]}, "'bands' must list 1-based band numbers"),
        ({**VALID, "scale": "1/255"}, "key 'scale' must be a number"),
        ({**VALID, "scale": True}, "key 'scale' must be a number"),
        ({**VALID, "scale": 0}, "'scale' must be a positive number"),
        ({**VALID, "mean": [0, 0, 0]}, "'mean' and 'std' must be given together"),
        ({**VALID, "mean": "0", "std": [1, 1, 1]}, "key 'mean' must be a list of numbers"),
        ({**VALID, "mean": [0], "std": [1]}, "'mean' has 1 values but the model reads 3 bands"),
        ({**VALID, "mean": [0, 0, 0], "std": [1, 0, 1]}, "'std' must be positive"),
        ({**VALID, "tile_size": 512.0}, "key 'tile_size' must be an integer"),
        ({**VALID, "tile_size": 0}, "'tile_size' must be a positive integer"),
        ({**VALID, "overlap": -1}, "'overlap' must be a non-negative integer"),
        ({**VALID, "tile_size": 100, "overlap": 50}, "must be less than half"),
        ({**VALID, "name": 3}, "key 'name' must be a string"),
        ({**VALID, "gsd_m": "15cm"}, "key 'gsd_m' must be a number"),
        ({**VALID, "gsd_m": 0}, "'gsd_m' must be a positive number"),
        ({**VALID, "tta": "yes"}, "key 'tta' must be true or false"),
    ],
)
def test_invalid_documents(tmp_path: Path, document: object, message: str) -> None:
    path = torchscript_with_document(tmp_path / "model.pt", document)
    with pytest.raises(ModelError, match=message) as caught:
        load_model(path, torch.device("cpu"))
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


def test_minimal_document_is_enough(tmp_path: Path) -> None:
    spec = read_model_spec(torchscript_with_document(tmp_path / "tiny.pt", VALID))
    assert (spec.name, spec.classes, spec.bands) == ("tiny", {1: "lawn"}, (1, 2, 3))


def test_oracle_model_spec(oracle: Path) -> None:
    spec = read_model_spec(oracle)
    assert (spec.classes, spec.bands, spec.scale, spec.name) == (
        DEFAULT_CLASSES,
        (1, 2),
        1.0,
        "oracle",
    )


def test_spec_is_validated_when_built_directly() -> None:
    with pytest.raises(ModelError, match="sha256"):
        ModelSpec(name="m", path="m.pt", sha256="x", classes={1: "a"}, bands=(1,), scale=1.0)
    with pytest.raises(ModelError, match="class id -2"):
        ModelSpec(name="m", path="m.pt", sha256="0" * 64, classes={-2: "a"}, bands=(1,), scale=1.0)


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expected
    with pytest.raises(OptionsError, match="device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        select_device("tpu")


def test_cuda_device_count_is_what_torch_sees() -> None:
    expected = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert cuda_device_count() == expected


@pytest.mark.skipif(
    not importlib.metadata.version("torch").endswith("+cpu"), reason="needs a CPU build of torch"
)
def test_planning_a_run_never_imports_torch() -> None:
    # What a run's flow process does before and besides submitting batches: read the model's
    # description, size the local cluster, import the flow and the batch task.
    script = """
import sys
from geoseg.api import local_cluster_config
from geoseg.config import RunConfig
from geoseg.models.contract import read_model_spec
from geoseg.models.shipped import default_model_path
import geoseg.cli.main, geoseg.flows.segment, geoseg.tasks.batch
read_model_spec(default_model_path())
assert local_cluster_config(RunConfig(inputs=("a.tif",), output="o.gpkg")).device == "auto"
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_select_cuda_without_cuda() -> None:
    for preference in ("cuda", "cuda:1"):
        with pytest.raises(OptionsError, match="sees no CUDA device"):
            select_device(preference)


class Flippable(torch.nn.Module):
    """Adds 1, or 2 when its test-time augmentation is switched on."""

    def __init__(self) -> None:
        super().__init__()
        self.tta = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (2.0 if self.tta else 1.0)


def test_tta_is_switched_on_per_load_for_models_that_offer_it(tmp_path: Path) -> None:
    path = tmp_path / "flippable.pt"
    package_model(Flippable(), path, classes={1: "a"}, bands=(1,), scale=1.0, tta=True)

    plain, spec = load_model(path, torch.device("cpu"))
    augmented, _ = load_model(path, torch.device("cpu"), tta=True)

    assert spec.tta
    assert plain is not augmented
    assert float(plain(torch.zeros(1))) == 1.0
    assert float(augmented(torch.zeros(1))) == 2.0


def test_tta_is_refused_for_models_without_it(tmp_path: Path, oracle: Path) -> None:
    with pytest.raises(ModelError, match=r"has no test-time augmentation.*run without --tta"):
        load_model(oracle, torch.device("cpu"), tta=True)
