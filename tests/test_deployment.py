"""The Prefect deployment, for real: a loopback server, infra/prefect.yaml, a worker, a run.

The commands are the ones infra/README.md documents: ``prefect work-pool create``, ``prefect
deploy --prefect-file infra/prefect.yaml`` and ``prefect worker start``; the run is triggered
with ``run_deployment`` and its GeoPackage checked against the ground truth of the test scene.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import yaml

from geoseg.errors import OptionsError
from tests.oracle_model import write_oracle_model
from tests.prefect_server import ROOT, Server, running_server, stop
from tests.scenes import NODATA, expected_ids, scene_bands

pytestmark = pytest.mark.e2e

PREFECT_FILE = ROOT / "infra" / "prefect.yaml"
CLASSES = {1: "lawn", 2: "bridge", 3: "building"}


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path) as server:
        yield server


def expected_objects() -> dict[str, tuple[str, float]]:
    """Each truth object's id (raster name, row and column of its first pixel) and class, area."""
    ids = expected_ids()
    pixel_m2 = 0.5 * 0.5 / 0.9996**2  # make_raster's grid sits on UTM 36N's central meridian
    objects = {}
    for value in np.unique(ids[ids > 0]).tolist():
        rows, cols = np.nonzero(ids == value)
        first = np.lexsort((cols, rows))[0]
        key = f"scene.tif:{rows[first]}:{cols[first]}"
        objects[key] = (CLASSES[value // 1000], len(rows) * pixel_m2)
    return objects


def test_prefect_yaml_deployment_runs_on_a_worker(
    prefect_server: Server, make_raster, tmp_path: Path, dask_address: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    scene = make_raster(scene_bands(), nodata=NODATA)
    model = write_oracle_model(tmp_path / "oracle.pt")
    out = tmp_path / "out" / "objects.gpkg"
    out.parent.mkdir()

    prefect_server.call("work-pool", "create", "geoseg", "--type", "process")
    prefect_server.call("deploy", "--prefect-file", str(PREFECT_FILE), "--name", "nightly")
    worker = prefect_server.start(
        "worker", "worker", "start", "--pool", "geoseg", "--type", "process", "--name", "test"
    )
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
            with get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name("geoseg-deployment/nightly")
            (schedule,) = deployment.schedules
            declared = yaml.safe_load(PREFECT_FILE.read_text())["deployments"][0]
            assert schedule.schedule.cron == declared["schedules"][0]["cron"]
            assert schedule.active
            assert deployment.work_pool_name == "geoseg"
            assert deployment.parameters == declared["parameters"]

            flow_run = run_deployment(
                "geoseg-deployment/nightly",
                parameters={
                    "inputs": [str(scene)],
                    "output": str(out),
                    "model": str(model),
                    "tile_size": 96,
                    "overlap": 8,
                    "batch_size": 4,
                    "dask_address": dask_address,
                },
                timeout=150,
            )
    finally:
        stop(worker)
    assert flow_run.state is not None
    assert flow_run.state.is_completed(), (
        f"flow run ended {flow_run.state}\n{prefect_server.log_tail()}"
    )

    found = {}
    for layer in CLASSES.values():
        frame = pyogrio.read_dataframe(out, layer=layer)
        for object_id, class_name, area in zip(
            frame["object_id"], frame["class_name"], frame["area_m2"], strict=True
        ):
            assert object_id not in found, f"{object_id} twice"
            found[object_id] = (class_name, area)
    expected = expected_objects()
    assert set(found) == set(expected)
    for object_id, (class_name, area) in expected.items():
        assert found[object_id][0] == class_name, object_id
        assert found[object_id][1] == pytest.approx(area, rel=0.005), object_id


def test_deployment_parameters_are_checked_like_a_run_file(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "infra"))
    try:
        import deployment
    finally:
        sys.path.remove(str(ROOT / "infra"))
    from geoseg.config import read_run_file

    run_file = tmp_path / "run.json"
    run_file.write_text('{"inputs": ["a.tif"], "output": "a.gpkg", "batch_size": "8"}')
    with pytest.raises(OptionsError) as from_file:
        read_run_file(run_file)
    with pytest.raises(OptionsError) as from_deployment:
        deployment.segment_deployment.fn(inputs=["a.tif"], output="a.gpkg", batch_size="8")
    assert str(from_file.value) == f"{run_file}: batch_size = '8' should be int"
    assert str(from_deployment.value) == (
        "geoseg-deployment parameters: batch_size = '8' should be int"
    )
    with pytest.raises(OptionsError, match=r"--score-threshold 2\.0: must be within"):
        deployment.segment_deployment.fn(inputs=["a.tif"], output="a.gpkg", score_threshold=2.0)
