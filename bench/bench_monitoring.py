"""Figures of the MONITOR step: the time and peak memory of monitoring one batch.

Renders the default project, installs its dependencies in a fresh venv with uv,
generates the training data (5,000 customers), starts MLflow as ``make dev --only
mlflow`` does, trains a champion once, then for batches of 10,000 and 100,000
customers prints:

- the student's command, ``python -m <package> monitor --batch B --no-retrain`` (as
  ``make monitor`` runs it, without the retraining): wall time from start to exit,
  imports included, and its peak resident memory (the kernel's maximum RSS of the process);
- the monitoring call alone (``monitor_batch``: read, score the batch and the training
  data, statistics, report, MLflow logging with the predictions as an artifact),
  timed inside a process that has already imported the package.

Run: ``.venv/bin/python bench/bench_monitoring.py`` (about 3 minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import (  # noqa: E402
    DEFAULT_PACKAGE,
    DevStack,
    ProjectEnv,
    create_project_env,
    render,
    snapshot_template,
    stack_env,
)

BATCH_SIZES = [10_000, 100_000]
TIMED_CALL = f"""
import json, resource, sys, time
from pathlib import Path
from {DEFAULT_PACKAGE}.config import load_settings
from {DEFAULT_PACKAGE}.monitoring import monitor_batch

start = time.perf_counter()
result = monitor_batch(load_settings(), Path(sys.argv[1]))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "peak_mib": peak, "drift": result.drift_detected}}))
"""


def timed_command(env: ProjectEnv, project: Path, args: list[str], **extra: str) -> tuple:
    """Wall seconds and peak RSS (MiB) of one child process, from ``wait4``."""
    start = time.perf_counter()
    process = subprocess.Popen(
        args,
        cwd=project,
        env=env.environ(project, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    output = process.stdout.read().decode()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {process.returncode}:\n{output}")
    return seconds, usage.ru_maxrss / 1024, output


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as scratch:
        work = Path(scratch)
        project = render(snapshot_template(work / "template"), work / "project")
        env = create_project_env(work / "venv", project, dev_group=False)
        servers = stack_env()
        python = str(env.python)
        env.run([python, "generate_sample_data.py"], project, **servers)
        with DevStack(env, project, only=["mlflow"], **servers):
            env.run([python, "-m", DEFAULT_PACKAGE, "train"], project, **servers)
            print("rows     | `monitor` command: wall, peak RSS | monitor_batch alone")
            for rows in BATCH_SIZES:
                env.run(
                    [python, "generate_sample_data.py", "--batch", "--rows", str(rows)],
                    project,
                    **servers,
                )
                batch = sorted((project / "data" / "batches").glob("batch_*.csv"))[-1]
                command = [python, "-m", DEFAULT_PACKAGE, "monitor", "--no-retrain"]
                wall, peak, _ = timed_command(
                    env, project, [*command, "--batch", str(batch)], **servers
                )
                _, _, output = timed_command(
                    env, project, [python, "-c", TIMED_CALL, str(batch)], **servers
                )
                call = json.loads(output.strip().splitlines()[-1])
                print(
                    f"{rows:>8,} | {wall:5.1f} s, {peak:6.0f} MiB"
                    f"                  | {call['seconds']:5.1f} s, {call['peak_mib']:6.0f} MiB"
                )


if __name__ == "__main__":
    main()
