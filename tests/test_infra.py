"""The deployment files in infra/: they parse, and every command they run exists as written.

Docker and Kubernetes are not needed: commands are checked against the installed ``geoseg``
click command, and ``dask``/``prefect`` flags against those tools' own ``--help``.
"""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from geoseg.cli.run import run_command

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BIN = Path(sys.executable).parent


def load_all(path: Path) -> list[Any]:
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


@functools.cache
def compose() -> dict[str, Any]:
    (doc,) = load_all(INFRA / "compose.yaml")
    return doc


@functools.cache
def k8s(name: str) -> dict[str, dict[str, Any]]:
    """The documents of a manifest by kind (each kind appears once in ours)."""
    docs = load_all(INFRA / "k8s" / name)
    kinds = [doc["kind"] for doc in docs]
    assert len(set(kinds)) == len(kinds), kinds
    return {doc["kind"]: doc for doc in docs}


@functools.cache
def help_flags(*command: str) -> frozenset[str]:
    """Every ``--flag`` and ``-f`` that ``command --help`` lists."""
    tool = shutil.which(command[0], path=str(BIN)) or shutil.which(command[0])
    assert tool, f"{command[0]} is not installed"
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(
        [tool, *command[1:], "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    flags = frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", done.stdout))
    # A help page, not an error: real output lists several options.
    assert done.stdout.startswith("Usage:"), done.stdout[:500]
    assert len(flags) >= 5, done.stdout[:500]
    return flags


def flags_of(args: list[str]) -> list[str]:
    return [arg for arg in args if arg.startswith("-")]


def run_option_names() -> set[str]:
    return {opt for param in run_command.params for opt in (*param.opts, *param.secondary_opts)}


def split_command(service: dict[str, Any]) -> list[str]:
    """A compose service's full argv: entrypoint (the image's is ``geoseg``) plus command."""
    entrypoint = service.get("entrypoint", ["geoseg"])
    command = service.get("command", [])
    assert isinstance(entrypoint, list), "use the exec (list) form"
    assert isinstance(command, list), "use the exec (list) form"
    return [*entrypoint, *command]


def subcommand_and_args(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """Split ``dask worker ADDR --x`` / ``prefect worker start --x`` into command and args."""
    depth = {"dask": 2, "prefect": 3, "geoseg": 2}[argv[0]]
    return tuple(argv[:depth]), argv[depth:]


# --- YAML ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted(INFRA.rglob("*.yaml")), ids=lambda p: str(p.relative_to(INFRA))
)
def test_yaml_files_parse(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in docs)


def test_expected_infra_files_exist() -> None:
    for name in [
        "Dockerfile",
        "compose.yaml",
        "k8s/daskcluster.yaml",
        "k8s/prefect-worker.yaml",
        "k8s/dask-helm-values.yaml",
        "jobqueue.py",
        "deployment.py",
        "README.md",
    ]:
        assert (INFRA / name).is_file(), name


# --- compose ---------------------------------------------------------------------------------


def test_compose_has_the_services() -> None:
    services = compose()["services"]
    assert set(services) >= {
        "prefect-server",
        "dask-scheduler",
        "dask-worker",
        "prefect-worker",
        "geoseg-run",
    }
    assert split_command(services["prefect-server"])[:5] == [
        "prefect",
        "server",
        "start",
        "--host",
        "0.0.0.0",
    ]
    assert split_command(services["dask-scheduler"])[:2] == ["dask", "scheduler"]
    assert split_command(services["dask-worker"])[:3] == [
        "dask",
        "worker",
        "tcp://dask-scheduler:8786",
    ]
    worker_argv = split_command(services["prefect-worker"])
    assert worker_argv[:3] == ["prefect", "worker", "start"]
    assert worker_argv[worker_argv.index("--pool") + 1] == "geoseg"
    assert services["dask-worker"]["deploy"]["replicas"] >= 2


@pytest.mark.parametrize(
    "name", ["dask-scheduler", "dask-worker", "prefect-server", "prefect-worker"]
)
def test_compose_tool_flags_exist(name: str) -> None:
    command, args = subcommand_and_args(split_command(compose()["services"][name]))
    unknown = set(flags_of(args)) - help_flags(*command)
    assert not unknown, f"{' '.join(command)} has no {sorted(unknown)}"


def test_compose_worker_flags() -> None:
    argv = split_command(compose()["services"]["dask-worker"])
    assert argv[argv.index("--nthreads") + 1] == "1"
    assert "--memory-limit" in argv
    assert compose()["services"]["dask-worker"]["environment"]["GDAL_CACHEMAX"]


def test_compose_run_uses_existing_geoseg_options() -> None:
    service = compose()["services"]["geoseg-run"]
    (program, subcommand), args = subcommand_and_args(split_command(service))
    assert (program, subcommand) == ("geoseg", "run")
    assert set(flags_of(args)) <= run_option_names()
    # The real parser accepts the arguments as written (types and arity included).
    ctx = run_command.make_context("run", list(args))
    assert ctx.params["dask_address"] == "tcp://dask-scheduler:8786"
    scheduler = split_command(compose()["services"]["dask-scheduler"])
    assert scheduler[scheduler.index("--port") + 1] == "8786"
    assert "geoseg" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_compose_unknown_run_option_is_caught() -> None:
    with pytest.raises(click.UsageError):
        run_command.make_context("run", ["x.tif", "-o", "y.gpkg", "--no-such-option"])


@pytest.mark.parametrize("name", ["prefect-worker", "geoseg-run"])
def test_compose_clients_use_the_prefect_server(name: str) -> None:
    env = compose()["services"][name]["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    server = split_command(compose()["services"]["prefect-server"])
    assert "4200" in server


def test_compose_shares_inputs_and_outputs() -> None:
    services = compose()["services"]

    def data_mount(name: str) -> str:
        mounts = [m for m in services[name].get("volumes", []) if m.endswith(":/data")]
        assert len(mounts) == 1, f"{name} does not mount /data"
        return mounts[0].split(":")[0]

    volumes = {data_mount(name) for name in ["dask-worker", "prefect-worker", "geoseg-run"]}
    assert len(volumes) == 1
    assert volumes <= set(compose()["volumes"])
    ctx = run_command.make_context(
        "run", subcommand_and_args(split_command(services["geoseg-run"]))[1]
    )
    paths = [*ctx.params["inputs"], str(ctx.params["output"])]
    assert all(path.startswith("/data/") for path in paths), paths


def test_compose_holds_no_credentials() -> None:
    text = (INFRA / "compose.yaml").read_text()
    for service in compose()["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|KEY_ID|TOKEN|AUTH_STRING|API_KEY", key):
                assert value is None, f"{key} must pass through from the host, not be set here"
    assert "AKIA" not in text


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (INFRA / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    instructions = dockerfile_instructions()
    (entrypoint,) = [json.loads(arg) for op, arg in instructions if op == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["geoseg"]
    assert entrypoint[0] in scripts
    (cmd,) = [json.loads(arg) for op, arg in instructions if op == "CMD"]
    from geoseg.cli.main import cli

    result = CliRunner().invoke(cli, cmd, prog_name="geoseg")
    assert result.exit_code == 0, result.output
    assert "Usage: geoseg" in result.output


def test_dockerfile_variants_and_user() -> None:
    instructions = dockerfile_instructions()
    args = [arg for op, arg in instructions if op == "ARG"]
    stages = [arg for op, arg in instructions if op == "FROM"]
    assert "VARIANT=cpu" in args
    assert any(stage.endswith("AS base-cpu") for stage in stages)
    assert any("cuda" in stage and stage.endswith("AS base-cuda") for stage in stages)
    assert any(stage.startswith("base-${VARIANT}") for stage in stages)
    assert "TORCH_VERSION=2.13.0" in args
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert 'torch==${TORCH_VERSION}" --index-url' in runs
    assert "pip install ." in runs
    users = [arg for op, arg in instructions if op == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    copied = [source for op, arg in instructions if op == "COPY" for source in arg.split()[:-1]]
    ignore = (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
    for source in copied:
        assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignore}, source


# --- Kubernetes ------------------------------------------------------------------------------


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_spec["containers"]


def test_k8s_kinds() -> None:
    assert set(k8s("daskcluster.yaml")) == {
        "DaskCluster",
        "DaskWorkerGroup",
        "PersistentVolumeClaim",
    }
    assert k8s("daskcluster.yaml")["DaskCluster"]["apiVersion"] == "kubernetes.dask.org/v1"
    assert set(k8s("prefect-worker.yaml")) == {"Deployment"}


def test_k8s_dask_tls() -> None:
    docs = k8s("daskcluster.yaml")
    cluster = docs["DaskCluster"]["spec"]
    (scheduler,) = containers(cluster["scheduler"]["spec"])
    argv = [*scheduler["command"], *scheduler["args"]]
    assert argv[argv.index("--protocol") + 1] == "tls"
    tls_files = {
        flag: argv[argv.index(flag) + 1] for flag in ("--tls-ca-file", "--tls-cert", "--tls-key")
    }
    command, args = subcommand_and_args(argv)
    assert set(flags_of(args)) <= help_flags(*command)
    mounts = {m["name"]: m["mountPath"] for m in scheduler["volumeMounts"]}
    secrets = {
        v["name"]: v["secret"]["secretName"]
        for v in cluster["scheduler"]["spec"]["volumes"]
        if "secret" in v
    }
    assert all(path.startswith(mounts["dask-tls"] + "/") for path in tls_files.values())
    assert secrets["dask-tls"] == "geoseg-dask-tls"

    for pod in (cluster["worker"]["spec"], docs["DaskWorkerGroup"]["spec"]["worker"]["spec"]):
        (worker,) = containers(pod)
        argv = [*worker["command"], *worker["args"]]
        command, args = subcommand_and_args(argv)
        assert argv[2].startswith("tls://geoseg-scheduler:")
        assert set(flags_of(args)) <= help_flags(*command)
        env = {e["name"]: e.get("value") for e in worker["env"]}
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        mount = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}["dask-tls"]
        for key in ("TLS__CA_FILE", "TLS__WORKER__CERT", "TLS__WORKER__KEY"):
            assert env[f"DASK_DISTRIBUTED__COMM__{key}"].startswith(mount + "/")
        assert {v["name"]: v for v in pod["volumes"]}["dask-tls"]["secret"]["secretName"] == (
            "geoseg-dask-tls"
        )


def test_k8s_cpu_workers_run_one_batch_at_a_time() -> None:
    (worker,) = containers(k8s("daskcluster.yaml")["DaskCluster"]["spec"]["worker"]["spec"])
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "1"


def test_k8s_gpu_workers() -> None:
    group = k8s("daskcluster.yaml")["DaskWorkerGroup"]["spec"]
    assert group["cluster"] == k8s("daskcluster.yaml")["DaskCluster"]["metadata"]["name"]
    (worker,) = containers(group["worker"]["spec"])
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    # Two batches in flight per GPU, as geoseg's local GPU workers run them.
    assert worker["args"][worker["args"].index("--resources") + 1] == "GPU=2"
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "2"
    assert worker["image"].endswith(":cuda")


def test_k8s_prefect_worker() -> None:
    deployment = k8s("prefect-worker.yaml")["Deployment"]
    (container,) = containers(deployment["spec"]["template"]["spec"])
    argv = [*container["command"], *container["args"]]
    command, args = subcommand_and_args(argv)
    assert command == ("prefect", "worker", "start")
    assert set(flags_of(args)) <= help_flags(*command)
    env = {e["name"]: e for e in container["env"]}
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY"):
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "prefect-api"
    assert "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT" in env


# --- Python entrypoints ----------------------------------------------------------------------


def test_jobqueue_script_passes_the_scheduler_address() -> None:
    tree = ast.parse((INFRA / "jobqueue.py").read_text())
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert {"--dask-address", "--threads-per-worker"} <= strings
    assert {"--dask-address", "--threads-per-worker"} <= run_option_names()
    assert "SLURMCluster" in {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_deployment_flow_parameters_are_the_run_file_keys() -> None:
    sys.path.insert(0, str(INFRA))
    try:
        import deployment
    finally:
        sys.path.remove(str(INFRA))
    from geoseg.config import RUN_FILE_KEYS

    ours = inspect.signature(deployment.segment_deployment.fn).parameters
    assert set(ours) == set(RUN_FILE_KEYS)
    required = {name for name, p in ours.items() if p.default is inspect.Parameter.empty}
    assert required == {"inputs", "output"}
    # Left out, a parameter takes geoseg run's default: the run file decides, not the flow.
    assert all(p.default is None for name, p in ours.items() if name not in required)
    assert deployment.segment_deployment.name == "geoseg-deployment"


def test_prefect_yaml_deploys_the_flow_to_the_compose_pool_with_a_schedule() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    from geoseg.config import run_file_fields

    document = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    (deployment,) = document["deployments"]
    path, function = deployment["entrypoint"].split(":")
    tree = ast.parse((ROOT / path).read_text())
    flows = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert function in flows
    worker = split_command(compose()["services"]["prefect-worker"])
    assert deployment["work_pool"]["name"] == worker[worker.index("--pool") + 1]
    run_file_fields(deployment["parameters"], "prefect.yaml")  # a valid run file
    (schedule,) = deployment["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert "pull" not in document, "prefect deploy records the folder it runs in"


def test_worker_dask_config_unsets_the_malloc_trim_setting_and_the_image_installs_it() -> None:
    import dask.config
    from distributed.nanny import _get_env_variables

    (settings,) = dask.config.collect_yaml([str(INFRA / "dask.yaml")])
    config = dask.config.update(copy.deepcopy(dask.config.config), settings)
    with dask.config.set(config):
        environ = _get_env_variables("distributed.nanny.pre-spawn-environ")
    assert "MALLOC_TRIM_THRESHOLD_" not in environ
    assert environ["OMP_NUM_THREADS"] == "1"  # Dask's other defaults stay
    assert "COPY infra/dask.yaml /etc/dask/" in (INFRA / "Dockerfile").read_text()
    assert "DASK_CONFIG=" in (INFRA / "jobqueue.py").read_text()
