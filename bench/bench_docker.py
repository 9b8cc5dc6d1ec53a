"""Figures of the Docker path on this machine, printed for the README.

Renders the default project (orchestrator=both, or the one given), builds its one image on
the base image built from Debian's packages (`.ci/build-base-image.sh`), and prints:
- the image's size, and the whole stack's disk (image plus volumes after a run);
- the build time cold (no build cache) and cached after editing a flow;
- `up -d --wait` to every service healthy, Dagster included;
- each container's memory idle, and while a scheduled Prefect run runs (`docker stats`);
- a deployment made from the host to its first scheduled run completed in the container
  (with Prefect).

Needs a Docker engine (`bash .ci/start-docker.sh`). Usage:
    uv run python bench/bench_docker.py [--orchestrator prefect]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from measure import containers_mib  # noqa: E402

from helpers import (  # noqa: E402
    ProjectEnv,
    copier_choices,
    copier_default,
    create_project_env,
    free_port,
    prefect_flow_runs,
    render,
    snapshot_template,
    wait_until,
)

BASE_IMAGE = os.environ.get("WORKSHOP_BASE_IMAGE", "mlops-workshop-base:bookworm")
STACK = ["docker", "compose", "--profile", "dagster"]


def timed(command: list[str], project: Path, timeout: float = 1800) -> float:
    started = time.monotonic()
    subprocess.run(command, cwd=project, check=True, capture_output=True, timeout=timeout)
    return time.monotonic() - started


def print_volumes(project: Path) -> None:
    """The project's named volumes and their size on disk, as `docker system df -v` counts."""
    usage = subprocess.run(
        ["docker", "system", "df", "-v", "--format", "{{json .Volumes}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    prefix = f"{project_slug(project)}_"
    print("volumes after the run:")
    for volume in json.loads(usage):
        if volume["Name"].startswith(prefix):
            print(f"  {volume['Name']:45} {volume['Size']}")


def project_slug(project: Path) -> str:
    return next(
        line.split(":", 1)[1].strip()
        for line in (project / "docker-compose.yml").read_text().splitlines()
        if line.startswith("name:")
    )


def print_memory(title: str, project: Path) -> None:
    print(f"{title}:")
    usages = containers_mib(STACK, project)
    for name, usage in sorted(usages.items()):
        print(f"  {name:45} {usage:.0f} MiB")
    print(f"  {'in all':45} {sum(usages.values()):.0f} MiB")


def readme_memory_row(project: Path) -> str:
    """The prerequisites' memory row, which extensions/context.py computes from these
    figures: compare it with the total above when the stack changes."""
    rows = (project / "README.md").read_text("utf-8").splitlines()
    return next(row for row in rows if row.startswith("| Memory |"))


def prepare(work: Path, orchestrator: str) -> tuple[Path, ProjectEnv, dict[str, int]]:
    template = snapshot_template(work / "template")
    project = render(template, work / "project", orchestrator=orchestrator)
    env = create_project_env(work / "venv", project, dev_group=False)
    ports = {"MLFLOW_PORT": free_port(), "PREFECT_PORT": free_port(), "DAGSTER_PORT": free_port()}
    dotenv = (project / ".env.example").read_text()
    for variable, port in ports.items():
        dotenv = "\n".join(
            f"{variable}={port}" if line.startswith(f"{variable}=") else line
            for line in dotenv.splitlines()
        )
    (project / ".env").write_text(
        dotenv + f'\nSCHEDULE_CRON="* * * * *"\nBASE_IMAGE={BASE_IMAGE}\n'
    )
    env.run([str(env.python), "generate_sample_data.py"], project)
    return project, env, ports


def deploy_to_first_completed_run(project: Path, env: ProjectEnv, prefect_port: int) -> float:
    api = f"http://127.0.0.1:{prefect_port}/api"
    started = time.monotonic()
    log = (project / "deploy.out").open("w")
    deploy = subprocess.Popen(
        [str(env.python), "pipelines/workshop/prefect/Prefect_Workshop.py", "deploy"],
        cwd=project,
        env=env.environ(project),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sampled = False
    try:

        def completed() -> bool:
            """Polled until a scheduled run completes; samples memory once while one runs."""
            nonlocal sampled
            runs = [
                r for r in prefect_flow_runs(api, "churn-training-pipeline") if r["auto_scheduled"]
            ]
            if not sampled and any(r["state"]["type"] == "RUNNING" for r in runs):
                print_memory("memory during a scheduled run", project)
                sampled = True
            return any(r["state"]["type"] == "COMPLETED" for r in runs)

        wait_until(completed, 600, "no scheduled run completed", interval=2)
        return time.monotonic() - started
    finally:
        os.killpg(deploy.pid, signal.SIGINT)
        deploy.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--orchestrator",
        choices=copier_choices("orchestrator"),
        default=copier_default("orchestrator"),
    )
    orchestrator = parser.parse_args().orchestrator
    print(f"orchestrator={orchestrator}")
    work = Path(tempfile.mkdtemp(prefix="bench-docker-"))
    project, env, ports = prepare(work, orchestrator)
    try:
        cold = timed([*STACK, "build", "--no-cache"], project)
        size = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", "churn-mlops-workshop"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        flow = project / "pipelines/examples/Prefect_ML_Pipeline.py"
        flow.write_text(flow.read_text() + "\n# edited\n")
        cached = timed([*STACK, "build"], project)
        print(f"image: {int(size) / 1e9:.2f} GB (one image for every service)")
        print(f"build: cold {cold:.0f} s, after editing a flow {cached:.1f} s")
        up = timed([*STACK, "up", "-d", "--wait"], project)
        print(f"up -d --wait to every service healthy: {up:.0f} s")
        print_memory("memory idle", project)
        print(f"  the project README asks for: {readme_memory_row(project)}")
        if orchestrator != "dagster":
            seconds = deploy_to_first_completed_run(project, env, ports["PREFECT_PORT"])
            print(f"host deploy to first scheduled run completed in the container: {seconds:.0f} s")
        print_volumes(project)
    finally:
        subprocess.run([*STACK, "down", "-v"], cwd=project, capture_output=True)


if __name__ == "__main__":
    main()
