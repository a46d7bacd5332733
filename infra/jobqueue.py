"""Run geoseg on an HPC cluster: Dask workers as SLURM jobs (dask-jobqueue), then ``geoseg run``.

Start this on a login node (or in a small job) inside the environment where geoseg is installed,
with ``dask-jobqueue`` installed beside it (``pip install dask-jobqueue``)::

    python infra/jobqueue.py --jobs 8 --queue gpu --memory 32GB -- \
        /scratch/scenes/*.tif -o /scratch/out/objects.gpkg

It submits the worker jobs, waits for the first worker, then runs
``geoseg run ... --dask-address <scheduler>`` and cancels the jobs when the run ends. Inputs and
the output's folder must be on the shared file system the compute nodes mount.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Start a SLURMCluster, run ``geoseg run`` on it with the remaining arguments, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs, one Dask worker each.")
    parser.add_argument("--cores", type=int, default=8, help="Cores per job.")
    parser.add_argument("--memory", default="32GB", help="Memory per job.")
    parser.add_argument("--queue", default=None, help="SLURM partition.")
    parser.add_argument("--account", default=None, help="SLURM account.")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument(
        "--interface", default=None, help="Network interface the compute nodes reach, e.g. ib0."
    )
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per job (adds --gres).")
    parser.add_argument("geoseg_args", nargs=argparse.REMAINDER, help="Arguments of geoseg run.")
    args = parser.parse_args(argv)
    run_args = [a for a in args.geoseg_args if a != "--"]

    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(
        cores=args.cores,
        # One Dask process per job; torch uses the job's cores.
        processes=1,
        memory=args.memory,
        queue=args.queue,
        account=args.account,
        walltime=args.walltime,
        job_extra_directives=[f"--gres=gpu:{args.gpus}"] if args.gpus else [],
        # A GPU job runs two batches at a time on its GPU, which `--device cuda` batches ask for.
        worker_extra_args=(
            ["--nthreads", "2", "--resources", "GPU=2"] if args.gpus else ["--nthreads", "1"]
        ),
        # infra/dask.yaml: workers without Dask's malloc trim setting (on a shared file system).
        job_script_prologue=[
            "export GDAL_CACHEMAX=64",
            f"export DASK_CONFIG={Path(__file__).resolve().with_name('dask.yaml')}",
        ],
        interface=args.interface,
    )
    try:
        cluster.scale(jobs=args.jobs)
        from distributed import Client

        with Client(cluster) as client:
            client.wait_for_workers(1)
        # Defaults first: an option repeated in run_args wins (click keeps the last).
        command = [
            "geoseg",
            "run",
            "--dask-address",
            cluster.scheduler_address,
            "--threads-per-worker",
            str(args.cores),
            *(["--device", "cuda"] if args.gpus else []),
            *run_args,
        ]
        return subprocess.call(command)
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
