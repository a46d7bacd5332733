"""What a run leaves in Prefect: artifacts and a readable name, and never a credential."""

from __future__ import annotations

import json
import os
from pathlib import Path
from uuid import UUID

import numpy as np
import pyogrio
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler

from geoseg import run
from tests.oracle_model import write_oracle_model
from tests.scenes import NODATA, scene_bands
from tests.test_remote import serving

pytestmark = pytest.mark.e2e

SECRETS = ("PASSWORD-1234", "SIG-5678", "AKIA0000SECRET", "TOKEN-9012")


def test_a_run_reports_artifacts_and_prefect_never_records_credentials(
    make_raster, tmp_path: Path, dask_address: str
) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    os.replace(make_raster(scene_bands(), nodata=NODATA), folder / "scene.tif")
    empty = make_raster(np.zeros((2, 40, 40), dtype=np.uint16), name="empty.tif")
    oracle = write_oracle_model(tmp_path / "oracle.pt")
    out = tmp_path / "objects.gpkg"
    with serving(folder) as url:
        host = url.removeprefix("http://")
        presigned = (
            f"http://analyst:PASSWORD-1234@{host}/scene.tif?X-Amz-Signature=SIG-5678"
            "&X-Amz-Credential=AKIA0000SECRET/20250101/us-east-1/s3/aws4_request"
        )
        absent = f"http://{host}/absent.tif?token=TOKEN-9012"
        result = run(
            [presigned, absent, empty],
            out,
            model=oracle,
            tile_size=256,
            overlap_px=32,
            dask_address=dask_address,
        )
    APILogHandler().flush()

    assert [failure.source for failure in result.failures] == [
        f"http://{host}/absent.tif?token=***"
    ]
    flow_run_id = UUID(pyogrio.read_dataframe(out, layer="run").loc[0, "flow_run_id"])
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )

    assert flow_run.name == "geoseg scene.tif (+2)"
    recorded_inputs = flow_run.parameters["request"]["inputs"]
    assert recorded_inputs[0] == (
        f"http://***@{host}/scene.tif?X-Amz-Signature=***&X-Amz-Credential=***"
    )
    assert any(run.name.startswith("segment scene-") for run in task_runs)
    by_key = {artifact.key: artifact for artifact in artifacts}
    table = by_key["geoseg-objects"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {(row["source"], row["class"], row["objects"]) for row in rows} == {
        ("scene.tif", "lawn", 4),
        ("scene.tif", "bridge", 1),
        ("scene.tif", "building", 3),
        ("empty.tif", "lawn", 0),
        ("empty.tif", "bridge", 0),
        ("empty.tif", "building", 0),
    }
    assert all(row["total_area_m2"] > 0 for row in rows if row["objects"])
    markdown = str(by_key["geoseg-output"].data)
    assert f"`{out}`" in markdown
    assert "absent.tif" in markdown
    assert any("absent.tif" in log.message for log in logs)  # logs were read back

    recorded = json.dumps(
        {
            "flow_run": flow_run.model_dump(mode="json"),
            "task_runs": [task_run.model_dump(mode="json") for task_run in task_runs],
            "artifacts": [artifact.model_dump(mode="json") for artifact in artifacts],
            "logs": [log.model_dump(mode="json") for log in logs],
        }
    )
    for secret in SECRETS:
        assert secret not in recorded
