"""The Prefect deployment entrypoint: ``geoseg run`` as a flow with JSON-friendly parameters.

``geoseg.flows.segment.segment_rasters`` takes a ``RunConfig`` and runs on whatever task runner
its caller sets; a deployment needs plain parameters and a Dask cluster chosen per run. This flow
takes the options of ``geoseg run`` and calls ``geoseg.run``, whose ``geoseg-run`` flow becomes
its subflow with a ``DaskTaskRunner`` on ``dask_address``. Deploy it to a process work pool::

    prefect work-pool create geoseg --type process
    cd /opt/geoseg && prefect deploy infra/deployment.py:segment_deployment \
        --name default --pool geoseg
    prefect deployment run geoseg-deployment/default \
        --param inputs='["/data/scene.tif"]' --param output=/data/objects.gpkg \
        --param dask_address=tcp://dask-scheduler:8786

Inputs are paths or URLs without credentials: flow-run parameters are stored by the Prefect
server and shown in its UI (see SECURITY.md).
"""

from __future__ import annotations

from prefect import flow

import geoseg


@flow(name="geoseg-deployment")
def segment_deployment(
    inputs: list[str],
    output: str,
    dask_address: str,
    model: str | None = None,
    tile_size: int | None = None,
    overlap_px: int | None = None,
    batch_size: int = 8,
    threads_per_worker: int | None = None,
    score_threshold: float = 0.5,
    min_area_m2: float = 0.0,
    simplify_m: float = 0.0,
    device: str = "auto",
    overwrite: bool = False,
) -> dict[str, object]:
    """Segment ``inputs`` into the GeoPackage ``output`` on the Dask cluster at ``dask_address``.

    Returns the output path, the object count and the batches segmented and reused.
    """
    result = geoseg.run(
        inputs,
        output,
        model=model,
        tile_size=tile_size,
        overlap_px=overlap_px,
        batch_size=batch_size,
        dask_address=dask_address,
        threads_per_worker=threads_per_worker,
        score_threshold=score_threshold,
        min_area_m2=min_area_m2,
        simplify_m=simplify_m,
        device=device,
        overwrite=overwrite,
    )
    return {
        "output": str(result.output),
        "objects": result.objects,
        "batches": result.batches,
        "batches_reused": result.batches_reused,
    }
