"""The Prefect deployment entrypoint: ``geoseg run`` as a flow whose parameters are a run file.

``geoseg.flows.segment.segment_rasters`` takes a ``RunConfig`` and runs on whatever task runner
its caller sets; a deployment needs plain parameters and a Dask cluster chosen per run. This flow
takes the keys of a run file (``geoseg run --config run.toml``), checks them exactly as a run
file is checked, and calls ``geoseg.api.run_config``, whose ``geoseg-run`` flow becomes its
subflow on a ``DaskTaskRunner``: on ``dask_address``, else on a local cluster of ``workers``
processes inside the flow run. ``infra/prefect.yaml`` deploys it with a work pool and a cron
schedule (see infra/README.md)::

    prefect work-pool create geoseg --type process
    prefect deploy --prefect-file infra/prefect.yaml --name nightly
    prefect deployment run geoseg-deployment/nightly \
        --param inputs='["/data/scene.tif"]' --param output=/data/objects.gpkg

Inputs are paths or URLs without credentials: flow-run parameters are stored by the Prefect
server and shown in its UI (see SECURITY.md).
"""

from __future__ import annotations

from prefect import flow

from geoseg.api import run_config
from geoseg.config import RunConfig, run_file_fields


@flow(name="geoseg-deployment", validate_parameters=False)
def segment_deployment(
    inputs: list[str],
    output: str,
    model: str | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    threads_per_worker: int | None = None,
    score_threshold: float | None = None,
    min_area_m2: float | None = None,
    simplify_m: float | None = None,
    device: str | None = None,
    overwrite: bool | None = None,
    keep_cache: bool | None = None,
    clear_cache: bool | None = None,
    asset: str | None = None,
    crs: str | None = None,
    fail_fast: bool | None = None,
    cache_dir: str | None = None,
    gsd: float | None = None,
    tta: bool | None = None,
) -> dict[str, object]:
    """Segment ``inputs`` into the GeoPackage ``output``; parameters are a run file's keys.

    A parameter left out (None) takes ``geoseg run``'s default. Returns the output path, the
    object count and the batches segmented and reused.

    Raises
    ------
    OptionsError
        A parameter of the wrong type, or options ``geoseg run`` refuses (named in one line).
    """
    # The parameters, as a run file holding the ones given; Prefect passes them unconverted.
    given = {key: value for key, value in locals().items() if value is not None}
    fields = run_file_fields(given, "geoseg-deployment parameters")
    result = run_config(RunConfig(**fields))  # type: ignore[arg-type]
    return {
        "output": str(result.output),
        "objects": result.objects,
        "batches": result.batches,
        "batches_reused": result.batches_reused,
    }
