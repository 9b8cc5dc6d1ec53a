"""Figures of the classroom server on this machine, printed for the README.

Renders the default project, starts its classroom server on loopback (`make classroom-up`,
images built on the base image from Debian's packages), creates N logins
(`make classroom-users N=...`), then N simulated students log at once, each on their own
login and in their own experiment: R runs, each with parameters, a metric history and a
small artifact uploaded through the server's artifact proxy. Prints:
- `make classroom-up` (images cached or not, as they are) and `make classroom-users`;
- runs finished per minute, and the median and p95 of one logging call (an HTTP request);
- each container's memory idle and at its highest under the load (`docker stats`).

A student is a thread with its own HTTP session: the figures are the server's, not those of
thirty Python interpreters importing MLflow on the same two cores.

Needs a Docker engine (`bash .ci/start-docker.sh`).
Usage: uv run python bench/bench_classroom.py [STUDENTS [RUNS_PER_STUDENT]]   (30 and 5)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from measure import containers_mib  # noqa: E402

from helpers import create_project_env, free_port, render, snapshot_template  # noqa: E402

BASE_IMAGE = os.environ.get("WORKSHOP_BASE_IMAGE", "mlops-workshop-base:bookworm")
CLASSROOM = ["docker", "compose", "--file", "classroom/compose.yml"]
CLASSROOM += ["--env-file", "classroom/.env"]
ARTIFACT = os.urandom(20_000)  # a small plot's worth of bytes


class Student:
    """One simulated student: their login, their experiment, their calls' durations."""

    def __init__(self, server: str, login: dict[str, str]):
        self.server = server
        self.session = requests.Session()
        self.session.auth = (login["login"], login["password"])
        self.experiment = login["experiment"]
        self.latencies: list[float] = []

    def call(self, method: str, path: str, **kwargs) -> dict:
        started = time.monotonic()
        response = self.session.request(method, f"{self.server}{path}", timeout=120, **kwargs)
        self.latencies.append(time.monotonic() - started)
        response.raise_for_status()
        return response.json() if response.content else {}

    def log_runs(self, runs: int) -> int:
        api = "/api/2.0/mlflow"
        found = self.call(
            "GET", f"{api}/experiments/get-by-name", params={"experiment_name": self.experiment}
        )
        experiment_id = found["experiment"]["experiment_id"]
        for number in range(runs):
            run = self.call("POST", f"{api}/runs/create", json={"experiment_id": experiment_id})
            run_id = run["run"]["info"]["run_id"]
            now = int(time.time() * 1000)
            metrics = [
                {"key": "loss", "value": 1 / (step + 1), "timestamp": now, "step": step}
                for step in range(20)
            ]
            params = [{"key": "n_estimators", "value": str(100 + number)}]
            self.call(
                "POST",
                f"{api}/runs/log-batch",
                json={"run_id": run_id, "metrics": metrics, "params": params},
            )
            path = f"{experiment_id}/{run_id}/artifacts/plot.bin"
            self.call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}", data=ARTIFACT)
            self.call("POST", f"{api}/runs/update", json={"run_id": run_id, "status": "FINISHED"})
        return runs


def memory(project: Path) -> dict[str, float]:
    """MiB used by each service of the classroom stack, now."""
    usage = containers_mib(CLASSROOM, project)
    return {name.split("-classroom-")[-1]: mib for name, mib in usage.items()}


def peak_memory(project: Path, stop: threading.Event, peaks: dict[str, float]) -> None:
    while not stop.is_set():
        for name, used in memory(project).items():
            peaks[name] = max(peaks.get(name, 0.0), used)


def main() -> None:
    students = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    work = Path(tempfile.mkdtemp(prefix="bench-classroom-"))
    project = render(snapshot_template(work / "template"), work / "project", orchestrator="both")
    env = create_project_env(work / "venv", project, dev_group=False)
    port = free_port()
    (project / "classroom" / ".env").write_text(
        f"CLASSROOM_HOST=127.0.0.1\nCLASSROOM_BIND=127.0.0.1\nMLFLOW_PORT={port}\n"
        f"PREFECT_PORT={free_port()}\nDAGSTER_PORT={free_port()}\n"
    )
    environ = env.environ(project, BASE_IMAGE=BASE_IMAGE)
    try:
        started = time.monotonic()
        subprocess.run(
            ["make", "classroom-up"], cwd=project, env=environ, check=True, capture_output=True
        )
        print(f"make classroom-up: {time.monotonic() - started:.0f} s")
        idle = memory(project)
        started = time.monotonic()
        subprocess.run(
            ["make", "classroom-users", f"N={students}"],
            cwd=project,
            env=environ,
            check=True,
            capture_output=True,
        )
        print(f"make classroom-users N={students}: {time.monotonic() - started:.0f} s")
        lines = (project / "classroom" / "logins.csv").read_text().splitlines()
        header = lines[0].split(",")
        logins = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
        class_ = [Student(f"http://127.0.0.1:{port}", login) for login in logins]

        stop, peaks = threading.Event(), {}
        sampler = threading.Thread(target=peak_memory, args=(project, stop, peaks))
        sampler.start()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=students) as pool:
            finished = sum(pool.map(lambda student: student.log_runs(runs), class_))
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()

        latencies = sorted(call for student in class_ for call in student.latencies)
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"{students} students logging at once, {runs} runs each (20-step metric, "
            f"1 parameter, a 20 kB artifact): {finished} runs in {elapsed:.0f} s, "
            f"{finished / elapsed * 60:.0f} runs per minute"
        )
        print(
            f"one logging call: median {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms ({len(latencies)} calls)"
        )
        print("memory, idle / highest under the load (MiB):")
        for name in sorted(idle):
            print(f"  {name:20} {idle[name]:6.0f} / {peaks.get(name, 0):6.0f}")
    finally:
        subprocess.run([*CLASSROOM, "down", "-v"], cwd=project, capture_output=True)


if __name__ == "__main__":
    main()
