"""Figures of the Prefect exercises, measured on a freshly rendered teacher's copy.

Prints how long a student waits: each step of the solved file (`stepN`), each
`check stepN`, the whole exercise (step 1 to 6 with their checks, step 5 waiting
for one tick of a one-minute cron), and the script's floor: its imports, timed
with a wrong argument, which prints the usage and stops.

    .venv/bin/python bench/bench_exercises.py [--venv PATH]

Without --venv, a virtual environment with the project's dependencies is built
with uv (cached under /tmp). The servers run on free ports and are stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import (  # noqa: E402
    DevStack,
    ProjectEnv,
    create_project_env,
    render,
    snapshot_template,
    stack_env,
    succeeded,
    wait_until,
)

SOLUTION = "pipelines/workshop/prefect/Prefect_Exercises_solution.py"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "bench-prefect-env"


def timed(env: ProjectEnv, project: Path, ports: dict[str, str], *args: str) -> float:
    start = time.monotonic()
    succeeded(env.run([str(env.python), SOLUTION, *args], project, check=False, **ports))
    return time.monotonic() - start


def step5_until_checked(env: ProjectEnv, project: Path, ports: dict[str, str]) -> float:
    """From `step5` to its check passing: deploy, one tick, the worker's run, the check."""
    api = ports["PREFECT_API_URL"]
    start = time.monotonic()
    watcher = subprocess.Popen(
        [str(env.python), SOLUTION, "step5"],
        cwd=project,
        env=env.environ(project, **ports),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def scheduled_run_completed() -> bool:
        runs = requests.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        return any(r["auto_scheduled"] and r["state_name"] == "Completed" for r in runs)

    try:
        wait_until(scheduled_run_completed, 600, "no scheduled run completed", interval=1)
        timed(env, project, ports, "check", "step5")
        return time.monotonic() - start
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        template = snapshot_template(Path(workdir) / "template")
        answers = {"orchestrator": "prefect", "include_solutions": True}
        project = render(template, Path(workdir) / "project", **answers)
        env = create_project_env(args.venv, project, dev_group=False)
        ports = {
            **stack_env("prefect"),
            "SCHEDULE_CRON": "* * * * *",
            "PREFECT_HOME": str(project / ".workshop" / "client-prefect"),
        }
        env.run([str(env.python), "generate_sample_data.py"], project, **ports)
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
        with DevStack(env, project, **ports):
            start = time.monotonic()
            for step in (1, 2, 3, 4, 6):
                run = timed(env, project, ports, f"step{step}")
                check = timed(env, project, ports, "check", f"step{step}")
                print(f"step {step}: run {run:5.1f} s, check {check:5.1f} s", flush=True)
            step5 = step5_until_checked(env, project, ports)
            whole = time.monotonic() - start
            print(f"step 5: deploy to check passed (one-minute cron): {step5:5.1f} s")
            print(f"steps 1 to 6 with their checks:                   {whole:5.1f} s")
            start = time.monotonic()
            env.run([str(env.python), SOLUTION, "check", "step9"], project, check=False, **ports)
            floor = time.monotonic() - start
            print(f"the script's floor (imports, then the usage):     {floor:5.1f} s")
        print(f"machine load at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
