"""Figures of the Prefect track, measured on a freshly rendered project.

Prints: the Prefect server's time to healthy, the memory (PSS) of the server and
the worker, part 3's sequential against parallel training time, and the time from
`deploy` (one-minute cron) to the first completed scheduled run.

    .venv/bin/python bench/bench_prefect.py [--venv PATH]

Without --venv, a virtual environment with the project's dependencies is built
with uv (cached under /tmp). Every server runs on free ports and is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from measure import process_tree, tree_pss_mib  # noqa: E402

from helpers import (  # noqa: E402
    DevStack,
    ProjectEnv,
    create_project_env,
    http_ok,
    render,
    snapshot_template,
    stack_env,
    wait_until,
)

WORKSHOP = "pipelines/workshop/prefect/Prefect_Workshop.py"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "bench-prefect-env"


def service_pid(devstack: DevStack, marker: str) -> int:
    for pid in process_tree(devstack.process.pid)[1:]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in command:
            return pid
    raise RuntimeError(f"no process running {marker!r}")


def time_to_healthy(env: ProjectEnv, project: Path, ports: dict[str, str]) -> float:
    """From `prefect server start` (as `make dev` runs it) to /api/health answering 200."""
    home = project / ".workshop" / "bench-prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    server = subprocess.Popen(
        [str(env.bin / "prefect"), "server", "start", "--host", "127.0.0.1"]
        + ["--port", ports["PREFECT_PORT"]],
        cwd=project,
        env=env.environ(project, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false"),
        stdout=(home / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: http_ok(f"{ports['PREFECT_API_URL']}/health"), 180, "server not up")
        return time.monotonic() - start
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def part3_times(env: ProjectEnv, project: Path, ports: dict[str, str]) -> tuple[float, float]:
    result = env.run([str(env.python), WORKSHOP, "part3"], project, **ports)
    match = re.search(r"sequential ([\d.]+) s, parallel ([\d.]+) s", result.stdout)
    return float(match.group(1)), float(match.group(2))


def deploy_to_first_scheduled_run(
    env: ProjectEnv, project: Path, ports: dict[str, str], worker: int
) -> tuple[float, float, float]:
    """Seconds from `deploy` to the first scheduled run running and completed; worker peak MiB."""
    api = ports["PREFECT_API_URL"]
    start = time.monotonic()
    deploy = subprocess.Popen(
        [str(env.python), WORKSHOP, "deploy"],
        cwd=project,
        env=env.environ(project, **ports, SCHEDULE_CRON="* * * * *"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started: dict[str, float] = {}
    peak = [0.0]

    def completed() -> bool:
        peak[0] = max(peak[0], tree_pss_mib(worker))
        runs = requests.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        runs = [run for run in runs if run["auto_scheduled"]]
        if any(run["state"]["type"] == "RUNNING" for run in runs):
            started.setdefault("running", time.monotonic() - start)
        return any(run["state"]["type"] == "COMPLETED" for run in runs)

    try:
        wait_until(completed, 600, "no scheduled run completed", interval=1)
        return started.get("running", float("nan")), time.monotonic() - start, peak[0]
    finally:
        deploy.send_signal(signal.SIGINT)
        try:
            deploy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(deploy.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        template = snapshot_template(Path(workdir) / "template")
        project = render(template, Path(workdir) / "project", orchestrator="prefect")
        env = create_project_env(args.venv, project, dev_group=False)
        ports = {
            **stack_env("prefect"),
            "PREFECT_HOME": str(project / ".workshop" / "client-prefect"),
        }
        env.run([str(env.python), "generate_sample_data.py"], project, **ports)
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
        healthy = time_to_healthy(env, project, ports)
        print(f"Prefect server, start to healthy:           {healthy:6.1f} s", flush=True)
        with DevStack(env, project, **ports) as devstack:
            server = service_pid(devstack, "prefect server start")
            worker = service_pid(devstack, "prefect worker start")
            pool = f"{ports['PREFECT_API_URL']}/work_pools/workshop-pool/workers/filter"
            wait_until(lambda: requests.post(pool, json={}, timeout=10).json(), 120, "no worker")
            print(f"Prefect server memory (PSS, idle):          {tree_pss_mib(server):6.0f} MiB")
            sequential, parallel = part3_times(env, project, ports)
            print(f"Part 3 training, sequential:                {sequential:6.1f} s")
            print(f"Part 3 training, parallel (3 threads):      {parallel:6.1f} s", flush=True)
            running, done, peak = deploy_to_first_scheduled_run(env, project, ports, worker)
            print(f"deploy to first scheduled run running:      {running:6.1f} s")
            print(f"deploy to first scheduled run completed:    {done:6.1f} s")
            print(f"Prefect worker memory (PSS, peak in a run): {peak:6.0f} MiB")
            wait_until(lambda: process_tree(worker) == [worker], 300, "flow runs still running")
            print(f"Prefect server memory (PSS, after runs):    {tree_pss_mib(server):6.0f} MiB")
            print(f"Prefect worker memory (PSS, idle after runs): {tree_pss_mib(worker):4.0f} MiB")
        print(f"machine load at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
