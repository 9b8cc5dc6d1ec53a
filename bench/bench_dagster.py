"""Figures of the Dagster track on this machine: start-up, first scheduled run, memory.

Renders a project with ``orchestrator=dagster``, installs its dependencies in a
fresh venv (uv), starts MLflow and the code servers (``make dev --only ...``), then
the Dagster webserver and daemon as ``make dev`` does, with the schedule turned on (CLI)
and a one-minute cron, and prints:

- the code servers' time to listening, and the webserver's to healthy (``/server_info``)
  and to its code locations loaded;
- the time from the daemon's start to the first scheduled run created and succeeded
  (the first part includes waiting for the next minute's tick);
- the memory (PSS, MiB) of the code servers (with the run they start), the webserver
  and the daemon, and the CPU the idle stack uses.

Run: ``.venv/bin/python bench/bench_dagster.py`` (about 3-4 minutes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from measure import pss_mib, tree_pss_mib  # noqa: E402

from helpers import (  # noqa: E402
    DEFAULT_PACKAGE,
    ProjectEnv,
    create_project_env,
    http_ok,
    render,
    snapshot_template,
    stack_env,
    wait_until,
)

RUNS_QUERY = """
{ runsOrError(filter: {tags: [{key: "dagster/schedule_name", value: "churn_training_schedule"}]})
  { ... on Runs { results { runId status } } } }
"""
LOCATION_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { loadStatus
  locationOrLoadError { __typename } } } } }
"""


def build_env(template: Path, work: Path) -> tuple[Path, ProjectEnv]:
    project = render(template, work / "project", orchestrator="dagster")
    return project, create_project_env(work / "venv", project)


def start(env: ProjectEnv, project: Path, args: list[str], log: Path, **extra: str):
    with log.open("wb") as output:
        return subprocess.Popen(
            args,
            cwd=project,
            env=env.environ(project, **extra),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def memory(pid: int) -> tuple[float, float]:
    """PSS of the process alone and of its whole tree (code servers, runs)."""
    return pss_mib(pid), tree_pss_mib(pid)


def graphql(url: str, query: str) -> dict:
    return requests.post(url, json={"query": query}, timeout=30).json()["data"]


def location_loaded(url: str) -> bool:
    entries = graphql(url, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    return all(e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries)


CODE_SERVERS = ["dagster-pipeline-code", "dagster-workshop-code", "dagster-exercises-code"]


def code_server_pids(project: Path) -> list[int]:
    """The `dagster code-server start` processes serving this project's sockets."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                command = (entry / "cmdline").read_bytes().split(b"\0")
                if b"code-server" in command and os.readlink(entry / "cwd") == str(project):
                    found.append(int(entry.name))
    return found


def code_servers_pss(project: Path) -> float:
    return sum(tree_pss_mib(pid) for pid in code_server_pids(project))


def group_cpu_seconds(groups: set[int]) -> float:
    """User and system CPU time of every process in these process groups."""
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) in groups:  # the process group id
                    total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(groups: set[int], seconds: float = 60) -> float:
    """CPU used by the Dagster servers over a minute with nothing scheduled."""
    before = group_cpu_seconds(groups)
    time.sleep(seconds)
    return 100 * (group_cpu_seconds(groups) - before) / seconds


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-dagster-"))
    template = snapshot_template(work / "template")
    project, env = build_env(template, work)
    settings = {
        **stack_env("dagster"),
        "SCHEDULE_CRON": "* * * * *",
        "DAGSTER_HOME": str(project / "dagster_home"),
        "PROJECT_ROOT": str(project),
    }
    env.run([str(env.python), "-m", DEFAULT_PACKAGE, "generate-data"], project)
    logs = project / ".workshop" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # `make dev` writes the workspace it serves, with the code servers' sockets in /tmp.
    workspace = str(project / ".workshop" / "workspace.yaml")
    # The reference pipeline's code location holds the schedule.
    schedule = ["-w", workspace, "-l", "churn_pipeline", "churn_training_schedule"]
    processes = []
    try:
        started = time.monotonic()
        servers = start(
            env,
            project,
            [str(env.python), "-m", DEFAULT_PACKAGE, "dev", "--only", "mlflow", *CODE_SERVERS],
            logs / "bench-dev.out",
            **settings,
        )
        processes.append(servers)
        wait_until(lambda: "Press Ctrl+C" in (logs / "bench-dev.out").read_text(), 600, "dev")
        elapsed = time.monotonic() - started
        print(f"MLflow and the {len(CODE_SERVERS)} code servers up after {elapsed:.1f} s")
        env.run([str(env.bin / "dagster"), "schedule", "start", *schedule], project, **settings)

        started = time.monotonic()
        webserver = start(
            env,
            project,
            [
                str(env.bin / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                settings["DAGSTER_PORT"],
                "-w",
                workspace,
            ],
            logs / "bench-webserver.out",
            **settings,
        )
        processes.append(webserver)
        url = f"http://127.0.0.1:{settings['DAGSTER_PORT']}"
        wait_until(lambda: http_ok(f"{url}/server_info"), 180, "webserver not healthy")
        healthy = time.monotonic() - started
        wait_until(lambda: location_loaded(f"{url}/graphql"), 180, "code location not loaded")
        loaded = time.monotonic() - started
        print(
            f"webserver: healthy after {healthy:.1f} s, code location loaded after {loaded:.1f} s"
        )

        started = time.monotonic()
        daemon = start(
            env,
            project,
            [str(env.bin / "dagster-daemon"), "run", "-w", workspace],
            logs / "bench-daemon.out",
            **settings,
        )
        processes.append(daemon)
        runs = lambda: graphql(f"{url}/graphql", RUNS_QUERY)["runsOrError"]["results"]  # noqa: E731
        wait_until(runs, 240, "the schedule created no run", interval=1)
        created = time.monotonic() - started
        peak = {"webserver": 0.0, "daemon": 0.0, "code servers": 0.0}

        def run_succeeded() -> bool:
            """Poll, and sample the trees' memory while the run works."""
            for name, pid in (("webserver", webserver.pid), ("daemon", daemon.pid)):
                peak[name] = max(peak[name], memory(pid)[1])
            peak["code servers"] = max(peak["code servers"], code_servers_pss(project))
            return any(r["status"] == "SUCCESS" for r in runs())

        wait_until(run_succeeded, 300, "no scheduled run succeeded", interval=1)
        succeeded = time.monotonic() - started
        print(
            f"daemon start -> first scheduled run created {created:.1f} s "
            f"(includes the wait for the minute's tick), succeeded {succeeded:.1f} s"
        )
        env.run([str(env.bin / "dagster"), "schedule", "stop", *schedule], project, **settings)
        groups = {webserver.pid, daemon.pid, *code_server_pids(project)}  # each leads its group
        print(f"idle Dagster (schedule off, sensors on): {idle_cpu_percent(groups):.0f}% of a core")
        print(f"code servers: PSS {code_servers_pss(project):.0f} MiB together")
        for name, process in (("webserver", webserver), ("daemon", daemon)):
            alone, tree = memory(process.pid)
            print(
                f"{name}: PSS {alone:.0f} MiB alone, {tree:.0f} MiB with its code server"
                f" (right after that run; the next tick may have started another)"
            )
        print(
            f"peak during the first run: webserver tree {peak['webserver']:.0f} MiB, "
            f"daemon tree {peak['daemon']:.0f} MiB, code servers {peak['code servers']:.0f} MiB"
            " (they start the run's process)"
        )
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT if process is processes[0] else signal.SIGTERM)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # what outlived its leader
    print(f"(project and logs kept in {project})")


if __name__ == "__main__":
    main()
