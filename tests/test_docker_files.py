"""The rendered Docker Compose stack and Dockerfiles, checked without a Docker engine.

`docker compose config` resolves the compose file exactly as `docker compose up`
would (interpolation from .env, profiles, anchors), so the services, ports,
volumes and healthchecks are asserted on its JSON output. Dockerfiles must pass
hadolint. The Compose v2 CLI is required: `bash .ci/install-compose.sh`.
The Airflow reference DAG cannot run here (no Airflow): its imports from the
project's package are checked against the rendered modules instead.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from helpers import DEFAULT_PACKAGE

pytestmark = pytest.mark.xdist_group("docker")

BIN = Path(sys.executable).parent

ORCHESTRATORS = ["prefect", "dagster", "both"]
PYTHON_VERSIONS = ["3.11", "3.12", "3.13"]
COMBINATIONS = list(itertools.product(ORCHESTRATORS, PYTHON_VERSIONS))
VOLUMES = {
    "mlflow-data": "workshop-mlflow-data",
    "prefect-data": "workshop-prefect-data",
    "dagster-data": "workshop-dagster-data",
}
PREFECT_SERVICES = {"prefect-server", "prefect-worker"}
DAGSTER_SERVICES = {"dagster-webserver", "dagster-daemon"}


@cache
def compose_command() -> list[str]:
    """`docker compose` (CLI plugin) or the standalone `docker-compose`: both are Compose v2."""
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for command in candidates:
        result = subprocess.run([*command, "version"], capture_output=True, text=True)
        if result.returncode == 0 and "v2." in result.stdout:
            return command
    pytest.fail(
        "Docker Compose v2 is not installed (neither `docker compose` nor `docker-compose`). "
        "Run `bash .ci/install-compose.sh`."
    )


def compose_env() -> dict[str, str]:
    """The test process's environment minus anything compose would interpolate."""
    prefixes = ("MLFLOW_", "PREFECT_", "DAGSTER_", "COMPOSE_", "BASE_IMAGE", "NOTIFICATIONS")
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


def compose(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*compose_command(), *args],
        cwd=project,
        capture_output=True,
        text=True,
        env={**compose_env(), **env},
        timeout=60,
    )
    assert result.returncode == 0, f"compose {' '.join(args)} failed:\n{result.stderr}"
    return result


def compose_config(project: Path, *profiles: str, **env: str) -> dict:
    profile_args = [arg for name in profiles for arg in ("--profile", name)]
    return json.loads(compose(project, *profile_args, "config", "--format", "json", **env).stdout)


@pytest.fixture(scope="module")
def projects(render_project) -> dict[tuple[str, str], Path]:
    """One project per orchestrator × Python version (other answers: defaults)."""
    return {
        (orchestrator, python): render_project(
            f"docker-{orchestrator}-{python.replace('.', '')}",
            orchestrator=orchestrator,
            python_version=python,
        )
        for orchestrator, python in COMBINATIONS
    }


def expected_services(orchestrator: str, with_dagster_profile: bool) -> set[str]:
    services = {"mlflow"}
    if orchestrator in ("prefect", "both"):
        services |= PREFECT_SERVICES
    if orchestrator == "dagster" or (orchestrator == "both" and with_dagster_profile):
        services |= DAGSTER_SERVICES
    return services


def healthcheck_url(service: dict) -> str:
    """The URL the healthcheck opens; it must run with the image's Python (no curl)."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], f"healthcheck should use python: {test}"
    code = test[3]
    assert "urllib.request" in code
    return code.split("urlopen('")[1].split("'")[0]


def published_ports(service: dict) -> dict[int, str]:
    return {port["target"]: port["published"] for port in service.get("ports", [])}


def volume_mounts(service: dict) -> dict[str, str]:
    return {mount["source"]: mount["target"] for mount in service.get("volumes", [])}


def healthy_dependencies(service: dict) -> set[str]:
    return {
        name
        for name, dependency in service.get("depends_on", {}).items()
        if dependency["condition"] == "service_healthy"
    }


@pytest.mark.parametrize(("orchestrator", "python"), COMBINATIONS)
def test_compose_config_has_the_right_services(projects, orchestrator: str, python: str) -> None:
    """Plain `config` and `--profile dagster config` pass; Dagster hides behind its profile
    only when it is the bonus track (orchestrator=both)."""
    project = projects[orchestrator, python]
    default = compose_config(project)
    assert set(default["services"]) == expected_services(orchestrator, with_dagster_profile=False)
    with_profile = compose_config(project, "dagster")
    assert set(with_profile["services"]) == expected_services(orchestrator, True)
    for name in DAGSTER_SERVICES & set(with_profile["services"]):
        profiles = with_profile["services"][name].get("profiles")
        assert profiles == (["dagster"] if orchestrator == "both" else None), (name, profiles)
    for name in set(with_profile["services"]) - DAGSTER_SERVICES:
        assert "profiles" not in with_profile["services"][name], name


@pytest.mark.parametrize("orchestrator", ORCHESTRATORS)
def test_services_match_the_spec(projects, orchestrator: str) -> None:
    config = compose_config(projects[orchestrator, "3.12"], "dagster")
    services = config["services"]

    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--workers=1" in command
    assert "--allowed-hosts=mlflow,mlflow:*" in command, "containers call it http://mlflow:5000"
    assert "sqlite:////data/mlflow.db" in command and "--artifacts-destination=/data/" in command
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert published_ports(mlflow) == {5000: "5000"}
    assert volume_mounts(mlflow) == {"mlflow-data": "/data"}
    assert healthcheck_url(mlflow) == "http://localhost:5000/health"
    assert mlflow["build"]["dockerfile"] == "Dockerfile.mlflow"

    if orchestrator in ("prefect", "both"):
        server, worker = services["prefect-server"], services["prefect-worker"]
        for service in (server, worker):
            assert service["build"]["dockerfile"] == "Dockerfile.prefect"
        assert published_ports(server) == {4200: "4200"}
        assert volume_mounts(server) == {"prefect-data": "/data/prefect"}
        assert healthcheck_url(server) == "http://localhost:4200/api/health"
        assert server["environment"]["PREFECT_UI_API_URL"] == "http://localhost:4200/api"
        assert worker["restart"] == "on-failure"
        assert healthy_dependencies(worker) == {"prefect-server", "mlflow"}
        assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert worker["command"] == [
            "prefect",
            "worker",
            "start",
            "--pool",
            "workshop-pool",
            "--type",
            "process",
        ]
        assert "ports" not in worker

    if orchestrator in ("dagster", "both"):
        webserver, daemon = services["dagster-webserver"], services["dagster-daemon"]
        for service in (webserver, daemon):
            assert service["build"]["dockerfile"] == "Dockerfile.dagster"
            assert volume_mounts(service) == {"dagster-data": "/app/dagster_home/storage"}
            assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
            # Runs launch in-process: the Docker socket is never mounted.
            assert not any("docker.sock" in target for target in volume_mounts(service).values())
        assert published_ports(webserver) == {3000: "3000"}
        assert healthcheck_url(webserver) == "http://localhost:3000/server_info"
        assert "dagster-webserver" in healthy_dependencies(daemon)
        assert daemon["command"][:2] == ["dagster-daemon", "run"]

    for name, service in services.items():
        assert service.get("init") is True, f"{name}: an init process reaps its children"
    used = {source for service in services.values() for source in volume_mounts(service)}
    assert {key: config["volumes"][key]["name"] for key in used} == {
        key: VOLUMES[key] for key in used
    }


def test_ports_come_from_dotenv(render_project) -> None:
    """Defaults are the answers; a port changed in .env reaches the published ports and URLs."""
    project = render_project(
        "docker-ports", orchestrator="both", mlflow_port=5100, prefect_port=4300, dagster_port=3100
    )
    services = compose_config(project, "dagster")["services"]
    assert published_ports(services["mlflow"]) == {5000: "5100"}
    assert published_ports(services["prefect-server"]) == {4200: "4300"}
    assert published_ports(services["dagster-webserver"]) == {3000: "3100"}

    dotenv = (project / ".env.example").read_text()
    for variable, old, new in (
        ("MLFLOW_PORT", 5100, 15001),
        ("PREFECT_PORT", 4300, 14201),
        ("DAGSTER_PORT", 3100, 13001),
    ):
        assert f"{variable}={old}\n" in dotenv
        dotenv = dotenv.replace(f"{variable}={old}\n", f"{variable}={new}\n")
    (project / ".env").write_text(dotenv + "BASE_IMAGE=workshop-python:local\n")
    services = compose_config(project, "dagster")["services"]
    assert published_ports(services["mlflow"]) == {5000: "15001"}
    assert published_ports(services["prefect-server"]) == {4200: "14201"}
    assert services["prefect-server"]["environment"]["PREFECT_UI_API_URL"] == (
        "http://localhost:14201/api"
    )
    assert published_ports(services["dagster-webserver"]) == {3000: "13001"}
    # The base image (no registry on the course machines) is an override, from .env too.
    for service in services.values():
        assert service["build"]["args"] == {"BASE_IMAGE": "workshop-python:local"}


def test_notification_settings_reach_the_pipeline_containers(render_project) -> None:
    project = render_project("docker-notify", orchestrator="both", notifications="slack")
    env = compose_config(project, "dagster", SLACK_WEBHOOK_URL="http://127.0.0.1:9/hook")
    for name in ("prefect-worker", "dagster-webserver", "dagster-daemon"):
        environment = env["services"][name]["environment"]
        assert environment["NOTIFICATIONS"] == "slack"
        assert environment["SLACK_WEBHOOK_URL"] == "http://127.0.0.1:9/hook"


@pytest.mark.parametrize("orchestrator", ORCHESTRATORS)
def test_compose_file_matches_the_compose_spec(projects, orchestrator: str) -> None:
    compose_file = projects[orchestrator, "3.12"] / "docker-compose.yml"
    result = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(compose_file),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("orchestrator", "python"), COMBINATIONS)
def test_dockerfiles_pass_hadolint(projects, orchestrator: str, python: str) -> None:
    project = projects[orchestrator, python]
    dockerfiles = sorted(project.glob("Dockerfile*"))
    expected = {"Dockerfile.mlflow"}
    expected |= {"Dockerfile.prefect"} if orchestrator in ("prefect", "both") else set()
    expected |= {"Dockerfile.dagster"} if orchestrator in ("dagster", "both") else set()
    assert {path.name for path in dockerfiles} == expected
    result = subprocess.run(
        [str(BIN / "hadolint"), *map(str, dockerfiles)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path in dockerfiles:
        text = path.read_text()
        assert f"ARG PYTHON_VERSION={python}\n" in text
        assert "ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim\nFROM ${BASE_IMAGE}\n" in text
        assert "PYTHONDONTWRITEBYTECODE=1" in text and "PYTHONUNBUFFERED=1" in text
        assert "\nUSER 10001:10001\n" in text, f"{path.name} must not run as root"
        # Dependencies come from pyproject.toml (the pins) before the code is copied.
        assert text.index("COPY pyproject.toml") < text.index("uv pip install")
        if "COPY . ." in text:
            assert text.index("uv pip install") < text.index("COPY . .")


def test_dagster_image_uses_the_projects_dagster_home(projects) -> None:
    project = projects["both", "3.12"]
    dockerfile = (project / "Dockerfile.dagster").read_text()
    assert "DAGSTER_HOME=/app/dagster_home" in dockerfile
    command = compose_config(project, "dagster")["services"]["dagster-webserver"]["command"]
    workspace = command[command.index("-w") + 1]
    assert workspace == "dagster_home/workspace.yaml"
    assert (project / workspace).is_file(), "the image copies the project's workspace.yaml"
    # Run and schedule storage (DAGSTER_HOME/history, /schedules) must be on the volume too.
    assert "ln -s storage/history dagster_home/history" in dockerfile
    assert "ln -s storage/schedules dagster_home/schedules" in dockerfile


def test_dockerignore_keeps_secrets_and_local_state_out(projects) -> None:
    patterns = (projects["both", "3.12"] / ".dockerignore").read_text().split()
    for pattern in (".env", ".venv", ".workshop", "dagster_home/*"):
        assert pattern in patterns
    # ...but the instance and workspace files go into the Dagster image.
    assert "!dagster_home/dagster.yaml" in patterns
    assert "!dagster_home/workspace.yaml" in patterns


@pytest.mark.parametrize(
    ("orchestrator", "verbs"),
    [
        ("prefect", {"up": "docker compose up --build --detach", "down": "docker compose down"}),
        ("dagster", {"up": "docker compose up --build --detach", "ps": "docker compose ps"}),
        (
            "both",
            {
                "up": "docker compose up --build --detach",
                "up-dagster": "docker compose --profile dagster up --build --detach",
                "down": "docker compose --profile dagster down",
                "logs": "docker compose --profile dagster logs --follow --tail=100",
            },
        ),
    ],
)
def test_makefile_verbs_drive_compose(projects, orchestrator: str, verbs: dict) -> None:
    project = projects[orchestrator, "3.12"]
    for verb, command in verbs.items():
        result = subprocess.run(["make", "-n", verb], cwd=project, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert command in result.stdout.splitlines(), result.stdout
    has_up_dagster = (
        subprocess.run(["make", "-n", "up-dagster"], cwd=project, capture_output=True).returncode
        == 0
    )
    assert has_up_dagster == (orchestrator == "both")


def defined_names(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def test_airflow_dag_calls_the_package(render_project) -> None:
    """Airflow is not installed: check the DAG's package imports resolve, and its API."""
    project = render_project("docker-airflow", orchestrator="prefect", include_airflow=True)
    dag_file = project / "pipelines" / "airflow" / "churn_training_dag.py"
    tree = ast.parse(dag_file.read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert any(
        node.module == "airflow.sdk" and {"dag", "task"} <= {a.name for a in node.names}
        for node in imports
    ), "use the Airflow 3 Task SDK"
    package_imports = [node for node in imports if node.module.startswith(DEFAULT_PACKAGE)]
    assert len(package_imports) >= 3
    for node in package_imports:
        module = project / "src" / Path(*node.module.split(".")).with_suffix(".py")
        missing = {alias.name for alias in node.names} - defined_names(module)
        assert not missing, f"{node.module} has no {missing}"
    # Parsed every few seconds by Airflow: no package import at module level.
    assert not [
        node
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module.startswith(DEFAULT_PACKAGE)
    ]
    assert '"*/2 * * * *", timezone="UTC"' in dag_file.read_text()


@pytest.mark.parametrize(
    ("language", "title"),
    [("en", "# Airflow: an overview"), ("fr", "# Airflow : vue d’ensemble")],
)
def test_airflow_overview_in_the_projects_language(render_project, language, title) -> None:
    project = render_project(f"docker-airflow-{language}", docs_language=language)
    overview = (project / "docs" / "airflow_overview.md").read_text()
    assert overview.startswith(title)
    assert "| Airflow 3 | Prefect 3 | Dagster 1.x |" in overview
    assert "pipelines/airflow/churn_training_dag.py" in overview
    assert (project / "pipelines" / "airflow" / "churn_training_dag.py").is_file()
