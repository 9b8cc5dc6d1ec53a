"""The rendered Docker Compose stack and Dockerfiles, checked without a Docker engine.

`docker compose config` resolves the compose file exactly as `docker compose up`
would (interpolation from .env, profiles, anchors), so the services, ports,
volumes and healthchecks are asserted on its JSON output. Dockerfiles must pass
hadolint. The Compose v2 CLI is required: `bash .ci/install-compose.sh`.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from helpers import DEV_BIN, copier_choices

pytestmark = pytest.mark.xdist_group("docker")


ORCHESTRATORS = copier_choices("orchestrator")
PYTHON_VERSIONS = copier_choices("python_version")
COMBINATIONS = list(itertools.product(ORCHESTRATORS, PYTHON_VERSIONS))
IMAGE = "churn-mlops-workshop:latest"  # the default project's one image
PREFECT_SERVICES = {"prefect-server", "prefect-worker"}
CODE_SERVERS = {  # service: the code location it serves
    "dagster-pipeline-code": "churn_pipeline",
    "dagster-workshop-code": "churn_workshop",
    "dagster-exercises-code": "churn_exercises",
}
DAGSTER_SERVICES = {*CODE_SERVERS, "dagster-webserver", "dagster-daemon"}


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


def published_addresses(service: dict) -> set[str]:
    return {port.get("host_ip", "0.0.0.0") for port in service.get("ports", [])}


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
    assert "sqlite:////data/mlflow/mlflow.db" in command
    assert "--artifacts-destination=/data/mlflow/artifacts" in command
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert published_ports(mlflow) == {5000: "5000"}
    assert volume_mounts(mlflow) == {"mlflow-data": "/data/mlflow"}
    assert healthcheck_url(mlflow) == "http://localhost:5000/health"
    assert mlflow["build"]["dockerfile"] == "Dockerfile"
    # One image for every service, built once: by mlflow; the others never pull it.
    for name, service in services.items():
        assert service["image"] == IMAGE, name
        assert ("build" in service) == (name == "mlflow"), name
        assert name == "mlflow" or service["pull_policy"] == "never", name
        assert published_addresses(service) <= {"127.0.0.1"}, f"{name}: loopback by default"

    if orchestrator in ("prefect", "both"):
        server, worker = services["prefect-server"], services["prefect-worker"]
        assert published_ports(server) == {4200: "4200"}
        assert volume_mounts(server) == {"prefect-data": "/data/prefect"}
        assert healthcheck_url(server) == "http://localhost:4200/api/health"
        assert server["environment"]["PREFECT_UI_API_URL"] == "http://localhost:4200/api"
        assert worker["restart"] == "unless-stopped"
        assert worker["environment"]["PREFECT_UI_URL"] == "http://localhost:4200"
        assert worker["environment"]["MLFLOW_UI_URL"] == "http://localhost:5000"
        # data/ is read-only in the containers: monitoring writes its predictions elsewhere.
        assert not worker["environment"]["PREDICTIONS_DIR"].startswith("/app/data")
        # The code comes from the project folder: edits reach the next run, no rebuild.
        assert set(volume_mounts(worker).values()) == {"/app/src", "/app/pipelines", "/app/data"}
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
        for name, location in CODE_SERVERS.items():
            # One code server per location, on the socket the workspace names, healthy
            # before the webserver and the daemon ask it for the definitions.
            command = services[name]["command"]
            assert command[:3] == ["dagster", "code-server", "start"]
            socket_path = command[command.index("-s") + 1]
            assert socket_path == f"dagster_home/storage/{location}.sock"
            assert socket_path in " ".join(services[name]["healthcheck"]["test"])
            # The webserver creates the storage first; the daemon starts last.
            assert "dagster-webserver" in healthy_dependencies(services[name])
            assert name in healthy_dependencies(daemon)
        for service in (webserver, daemon, *(services[name] for name in CODE_SERVERS)):
            mounts = volume_mounts(service)
            assert mounts.pop("dagster-data") == "/data/dagster"
            assert set(mounts.values()) == {"/app/src", "/app/pipelines", "/app/data"}
            assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
            assert service["environment"]["DAGSTER_UI_URL"] == "http://localhost:3000"
            # Runs launch in-process: the Docker socket is never mounted.
            assert not any("docker.sock" in target for target in volume_mounts(service).values())
        assert published_ports(webserver) == {3000: "3000"}
        assert healthcheck_url(webserver) == "http://localhost:3000/server_info"
        assert daemon["command"][:4] == ["dagster-daemon", "run", "--log-level", "warning"]

    for name, service in services.items():
        assert service.get("init") is True, f"{name}: an init process reaps its children"
    # Volumes named after the project: two projects on one machine share nothing.
    for key, volume in config["volumes"].items():
        assert volume["name"] == f"churn-mlops-workshop_{key}", volume


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
    assert services["mlflow"]["build"]["args"] == {"BASE_IMAGE": "workshop-python:local"}


def test_classroom_ip_opens_the_ports_and_mlflow_follows(render_project) -> None:
    """One .env setting publishes on the classroom address; the servers accept that name."""
    project = render_project("docker-classroom", orchestrator="both")
    dotenv = (project / ".env.example").read_text()
    assert "\nCLASSROOM_IP=\n" in dotenv, "empty by default: this machine only"
    (project / ".env").write_text(
        dotenv.replace("\nCLASSROOM_IP=\n", "\nCLASSROOM_IP=192.0.2.10\n")
    )
    services = compose_config(project, "dagster")["services"]
    for name in ("mlflow", "prefect-server", "dagster-webserver"):
        assert published_addresses(services[name]) == {"192.0.2.10"}, name
    assert "192.0.2.10,192.0.2.10:*" in " ".join(services["mlflow"]["command"])
    assert services["prefect-server"]["environment"]["PREFECT_UI_API_URL"] == (
        "http://192.0.2.10:4200/api"
    )
    assert services["prefect-worker"]["environment"]["PREFECT_UI_URL"] == "http://192.0.2.10:4200"
    assert services["prefect-worker"]["environment"]["MLFLOW_UI_URL"] == "http://192.0.2.10:5000"


def test_notification_settings_reach_the_pipeline_containers(render_project) -> None:
    project = render_project("docker-notify", orchestrator="both", notifications="slack")
    env = compose_config(project, "dagster", SLACK_WEBHOOK_URL="http://127.0.0.1:9/hook")
    # The code servers start the runs and evaluate the sensors that send notifications.
    for name in ("prefect-worker", "dagster-pipeline-code", "dagster-webserver", "dagster-daemon"):
        environment = env["services"][name]["environment"]
        assert environment["NOTIFICATIONS"] == "slack"
        assert environment["SLACK_WEBHOOK_URL"] == "http://127.0.0.1:9/hook"


@pytest.mark.parametrize("orchestrator", ORCHESTRATORS)
def test_compose_file_matches_the_compose_spec(projects, orchestrator: str) -> None:
    compose_file = projects[orchestrator, "3.12"] / "docker-compose.yml"
    result = subprocess.run(
        [
            str(DEV_BIN / "check-jsonschema"),
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
    assert [path.name for path in dockerfiles] == ["Dockerfile"], "one image for every service"
    result = subprocess.run(
        [str(DEV_BIN / "hadolint"), *map(str, dockerfiles)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path in dockerfiles:
        text = path.read_text()
        assert f"ARG PYTHON_VERSION={python}\n" in text
        assert "ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim\nFROM ${BASE_IMAGE}\n" in text
        # Bytecode written where the non-root user can: not compiled again by every process.
        assert "PYTHONPYCACHEPREFIX=/tmp/pycache" in text and "PYTHONUNBUFFERED=1" in text
        assert "PYTHONDONTWRITEBYTECODE" not in text
        assert "\nUSER 10001:10001\n" in text, f"{path.name} must not run as root"
        # Dependencies come from pyproject.toml (the pins) before the code is copied.
        assert text.index("COPY pyproject.toml") < text.index("uv pip install")
        if "COPY . ." in text:
            assert text.index("uv pip install") < text.index("COPY . .")


def test_dagster_image_uses_the_projects_dagster_home(projects) -> None:
    project = projects["both", "3.12"]
    dockerfile = (project / "Dockerfile").read_text()
    assert "DAGSTER_HOME=/app/dagster_home" in dockerfile
    command = compose_config(project, "dagster")["services"]["dagster-webserver"]["command"]
    workspace = command[command.index("-w") + 1]
    assert workspace == "dagster_home/workspace.yaml"
    assert (project / workspace).is_file(), "the image copies the project's workspace.yaml"
    # Runs, schedules and asset values (history/, schedules/, storage/) live on the volume.
    assert "for folder in history schedules storage; do" in dockerfile
    assert 'ln -sfn "/data/dagster/${folder}" "dagster_home/${folder}"' in dockerfile


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
        (
            "prefect",
            {"up": "docker compose up --build --detach --wait", "down": "docker compose down"},
        ),
        ("dagster", {"up": "docker compose up --build --detach --wait", "ps": "docker compose ps"}),
        (
            "both",
            {
                "up": "docker compose up --build --detach --wait",
                "up-dagster": "docker compose --profile dagster up --build --detach --wait",
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


# --- The classroom server (classroom/compose.yml) ----------------------------------------

CLASSROOM = ["--file", "classroom/compose.yml", "--env-file", "classroom/.env"]
CLASSROOM_SERVICES = {
    "core": {"postgres", "s3", "mlflow"},
    "prefect": {"prefect-server"},
    "dagster": {"dagster-code", "dagster-webserver", "dagster-daemon", "dagster-proxy"},
}
# Who may hold each secret: the least each service needs.
SECRET_HOLDERS = {
    "POSTGRES_PASSWORD": {"postgres"},
    "S3_SECRET_KEY": {"s3", "mlflow"},
    "MLFLOW_SECRET_KEY": {"mlflow"},
    "PREFECT_DB_PASSWORD": {"postgres", "prefect-server"},
    "MLFLOW_WORKER_PASSWORD": {"mlflow"},  # it makes the workers' login; the workers get a file
    "DAGSTER_UI_PASSWORD": {"dagster-proxy"},
}


def classroom_secrets(project: Path) -> dict[str, str]:
    """A value for every variable the classroom compose file requires (``${NAME:?...}``)."""
    required = re.findall(r"\$\{([A-Z0-9_]+):\?", (project / "classroom/compose.yml").read_text())
    return {name: f"value-of-{name.lower()}" for name in required}


def written_by_classroom_up(project: Path) -> set[str]:
    """The names `make classroom-up` writes into classroom/.env: classroom.py's constants."""
    module = ast.parse(next(project.glob("src/*/classroom.py")).read_text())
    names = {"CLASSROOM_HOST"}
    for node in module.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in {"SECRET_NAMES", "SERVER_DEFAULTS"}:
            names |= set(ast.literal_eval(node.value))
    return names


def classroom_config(project: Path) -> dict:
    env_file = project / "classroom" / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in classroom_secrets(project).items()))
    try:
        return json.loads(compose(project, *CLASSROOM, "config", "--format", "json").stdout)
    finally:
        env_file.unlink()


@pytest.mark.parametrize("orchestrator", ORCHESTRATORS)
def test_the_classroom_stack_holds_each_secret_where_it_is_needed(projects, orchestrator: str):
    project = projects[orchestrator, "3.12"]
    # every variable the stack requires is one that `make classroom-up` writes
    assert set(classroom_secrets(project)) <= written_by_classroom_up(project)
    services = classroom_config(project)["services"]
    wanted = set(CLASSROOM_SERVICES["core"])
    if orchestrator in ("prefect", "both"):
        wanted |= CLASSROOM_SERVICES["prefect"]
    reached = {"mlflow", "prefect-server", "dagster-proxy"}  # published on the room's network
    if orchestrator in ("dagster", "both"):
        wanted |= CLASSROOM_SERVICES["dagster"]
        reached.add("postgres")  # other machines' code servers write their runs' events there
    assert set(services) == wanted
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == wanted & reached
    secrets = classroom_secrets(project)
    for name, holders in SECRET_HOLDERS.items():
        if name not in secrets:
            continue
        holding = {
            service
            for service, config in services.items()
            if secrets[name] in json.dumps(config.get("environment", {}))
        }
        assert holding == holders & set(services), name
    for service in services.values():  # passwords go through variables, never commands
        assert not any(value in json.dumps(service["command"]) for value in secrets.values())


def test_the_classroom_stack_without_its_secrets_says_what_to_run(projects):
    project = projects["both", "3.12"]
    result = subprocess.run(
        [*compose_command(), "--file", "classroom/compose.yml", "config"],
        cwd=project,
        capture_output=True,
        text=True,
        env=compose_env(),
        timeout=60,
    )
    assert result.returncode != 0
    assert "run make classroom-up" in result.stderr


@pytest.mark.parametrize("orchestrator", ORCHESTRATORS)
def test_the_classroom_files_pass_hadolint_and_the_compose_spec(projects, orchestrator: str):
    classroom = projects[orchestrator, "3.12"] / "classroom"
    linted = subprocess.run(
        [str(DEV_BIN / "hadolint"), str(classroom / "Dockerfile")], capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    compose_files = sorted(classroom.glob("*.yml"))
    assert [path.name for path in compose_files] == ["compose.yml", "worker.yml"]
    checked = subprocess.run(
        [
            str(DEV_BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            *map(str, compose_files),
        ],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_class_worker_without_the_workers_handout_says_what_to_copy(projects):
    """`make classroom-worker` on a machine that lacks classroom/worker.env: one line, and
    nothing built or started."""
    project = projects["both", "3.12"]
    result = subprocess.run(
        ["make", "classroom-worker", "COMPOSE=false"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    said = result.stderr.splitlines()[0]
    assert said.startswith("classroom/worker.env") and "handouts/class-worker.env" in said, said
    assert "build" not in result.stdout  # stopped before any compose command
