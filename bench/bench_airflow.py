"""Figures of the Airflow reference DAG on this machine: its environment, database and one run.

Renders a project (orchestrator=prefect, include_airflow), builds its Airflow environment
with the commands of `make airflow-env` (uv, apache-airflow 3.3.2 and the project, in
.venv-airflow, then `airflow db migrate`), deletes it and builds it again, so that the
second install finds uv's cache warm. Then starts MLflow as `make dev --only mlflow` does
and runs `make airflow-test`'s `airflow dags test churn_training`. Prints:

- the install (`uv pip install`): as the cache was found, then with a warm cache;
- `airflow db migrate` on an empty SQLite database (the second, warm build);
- `airflow dags test`, from the command's start to its exit (every task in one process).

Run: ``.venv/bin/python bench/bench_airflow.py`` (about 3 minutes; uv on PATH).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import (  # noqa: E402
    DevStack,
    create_project_env,
    make_commands,
    render,
    snapshot_template,
    stack_env,
    uv_executable,
)

STEPS = ("venv", "install", "migrate")  # what `make airflow-env` runs, in that order


def student_shell(**extra: str) -> dict[str, str]:
    """A shell without server URLs, AIRFLOW_* or a pyenv pin from elsewhere; uv on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "MLFLOW_", "AIRFLOW", "PROJECT_ROOT", "PYENV_VERSION"))
        and key != "VIRTUAL_ENV"
    }
    env["PATH"] = f"{Path(uv_executable()).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


def timed(command: str, project: Path, **extra: str) -> float:
    started = time.monotonic()
    subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=project,
        env=student_shell(**extra),
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def build_airflow_env(project: Path) -> dict[str, float]:
    shutil.rmtree(project / ".venv-airflow", ignore_errors=True)
    shutil.rmtree(project / ".workshop" / "airflow", ignore_errors=True)
    commands = make_commands(project, "airflow-env")
    return {step: timed(command, project) for step, command in zip(STEPS, commands, strict=True)}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-airflow-"))
    template = snapshot_template(work / "template")
    project = render(template, work / "project", orchestrator="prefect", include_airflow=True)
    first = build_airflow_env(project)
    warm = build_airflow_env(project)
    print(
        f"install: {first['install']:.1f} s as the uv cache was found,"
        f" {warm['install']:.1f} s warm (venv {warm['venv']:.1f} s)"
    )
    print(f"airflow db migrate: {warm['migrate']:.1f} s (first build: {first['migrate']:.1f} s)")

    env = create_project_env(work / "venv", project)
    env.run([str(env.python), "generate_sample_data.py"], project)
    servers = stack_env()
    with DevStack(env, project, only=["mlflow"], **servers):
        prerequisite, dags_test = make_commands(project, "airflow-test")
        timed(prerequisite, project)
        seconds = timed(dags_test, project, MLFLOW_TRACKING_URI=servers["MLFLOW_TRACKING_URI"])
    print(f"airflow dags test churn_training: {seconds:.1f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
