"""Figures of the MLflow track on this machine: the server's start-up and memory, the notebooks.

Renders the default project, installs its dependencies (notebooks extra and dev
group) in a fresh venv with uv, generates the data, then:

- starts the MLflow server as ``make dev --only mlflow`` does (one worker, no job
  runner) and prints its time to a healthy ``/health`` and its memory (PSS, MiB,
  from ``/proc/<pid>/smaps_rollup`` summed over the server's process tree);
- executes each notebook with nbclient, in order, in a kernel of that venv (01b with
  the solutions filled in) and prints the time each takes;
- prints the server's memory again, after the notebooks' runs and models;
- prints how long ``predict`` takes to fail against a tracking URI nobody answers
  (the CLI's own check, instead of MLflow's minutes of retries).

Run: ``.venv/bin/python bench/bench_mlflow.py`` (about 3-5 minutes).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from measure import process_tree, pss_mib  # noqa: E402

from helpers import (  # noqa: E402
    DEFAULT_PACKAGE,
    ProjectEnv,
    create_project_env,
    free_port,
    http_ok,
    render,
    snapshot_template,
    stack_env,
    wait_until,
)

RUNNER = Path(__file__).resolve().parents[1] / "tests" / "run_notebooks.py"
NOTEBOOKS = ["01_messy_notebook", "01b_mlflow_transition", "02_mlflow_organized"]
SOLUTIONS = "notebooks/solutions/01b_mlflow_transition_solutions.ipynb"


def build_env(template: Path, work: Path) -> tuple[Path, ProjectEnv]:
    project = render(template, work / "project", include_solutions=True)  # the teacher's copy
    return project, create_project_env(work / "venv", project)


def server_memory(supervisor: int) -> tuple[int, float]:
    """Processes and PSS of the MLflow server's tree, without the ``dev`` supervisor."""
    server = [pid for pid in process_tree(supervisor) if pid != supervisor]
    return len(server), sum(pss_mib(pid) for pid in server)


def run_notebook(env: ProjectEnv, project: Path, name: str, **settings: str) -> dict:
    job = {"notebook": f"notebooks/{name}.ipynb"}
    if name == "01b_mlflow_transition":
        job["solutions"] = SOLUTIONS
    spec = project / ".workshop" / f"bench-{name}.json"
    spec.write_text(json.dumps([job]))
    result = env.run([str(env.python), str(RUNNER), str(spec)], project, timeout=900, **settings)
    return json.loads(result.stdout.splitlines()[-1])


def time_to_unreachable_error(env: ProjectEnv, project: Path) -> float:
    """Seconds for the CLI to refuse a tracking URI nobody listens on."""
    predict = ["predict", "--input", "x.csv", "--output", "y.csv"]
    started = time.monotonic()
    result = subprocess.run(
        [str(env.python), "-m", DEFAULT_PACKAGE, *predict],
        cwd=project,
        env=env.environ(project, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    if result.returncode != 1 or "not reachable" not in result.stderr:
        raise SystemExit(f"unexpected outcome for an unreachable server:\n{result.stderr}")
    return seconds


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-mlflow-"))
    project, env = build_env(snapshot_template(work / "template"), work)
    settings = {
        **stack_env(),
        "SERVING_PORT": str(free_port()),
    }
    env.run([str(env.python), "-m", DEFAULT_PACKAGE, "generate-data"], project)
    seconds = time_to_unreachable_error(env, project)
    print(f"predict against an unreachable server: fails after {seconds:.1f} s")
    (project / ".workshop").mkdir(exist_ok=True)
    log = (project / ".workshop" / "bench-dev.out").open("wb")
    started = time.monotonic()
    dev = subprocess.Popen(
        [str(env.python), "-m", DEFAULT_PACKAGE, "dev", "--only", "mlflow"],
        cwd=project,
        env=env.environ(project, **settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: http_ok(f"{settings['MLFLOW_TRACKING_URI']}/health"), 180, "MLflow not healthy"
        )
        healthy = time.monotonic() - started
        processes, pss = server_memory(dev.pid)
        print(f"MLflow server: healthy after {healthy:.1f} s")
        print(f"MLflow server at start: {processes} processes, {pss:.0f} MiB PSS")
        for name in NOTEBOOKS:
            result = run_notebook(env, project, name, **settings)
            status = "ok" if result["error"] is None else f"FAILED\n{result['error']}"
            print(f"notebook {name}: {result['seconds']:.1f} s ({status})")
        processes, pss = server_memory(dev.pid)
        print(f"MLflow server after the notebooks: {processes} processes, {pss:.0f} MiB PSS")
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=60)
    print(f"(work folder: {work})")


if __name__ == "__main__":
    main()
