"""Where the CPU of a test run goes: the run under the kernel's process accounting, its
CPU-seconds added up by kind of process.

CI's servers phase keeps both cores busy from start to end, so it is as long as the CPU
it spends, and its wall time varies by a third from one machine day to the next: compare
a change by the CPU-seconds it saves, which this prints, rather than by minutes.

Every process that ends during the run is accounted for by the kernel (BSD process
accounting, Debian's `acct` package); the command lines are read from /proc once a second,
so a process shorter than that is known by its name only. Needs root, for `accton`.

Usage: uv run python bench/bench_ci_cpu.py [pytest arguments]
    e.g. uv run python bench/bench_ci_cpu.py -m "not docker"
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")  # /proc/<pid>/stat's start time unit
ACCOUNTING_TICKS = 100  # AHZ: the unit of the accounting file's times, as dump-acct prints them
SERVERS = re.compile(
    r"mlflow server|mlflow\.server|uvicorn|prefect (server|worker) start|dagster-webserver"
    r"|dagster-daemon|code-server start|dagster api grpc"
)
PYTEST = "pytest and its workers (rendering, checks, copier in process)"
# Kinds in the order they are tried: the first whose pattern a command line (or, for a
# process shorter than a sample, its name) matches names the process.
KINDS = [
    ("bytecode compiled at install (uv)", r"pip_compileall"),
    ("servers and workers: MLflow, Prefect, Dagster", SERVERS.pattern),
    ("Prefect flow runs", r"prefect\.engine"),
    ("Dagster runs and their steps", r"dagster (job execute|api execute)|spawn_main"),
    ("Python commands the tests run (scripts, CLI, suites)", r"python|^jemalloc_bg_thd"),
    ("tools: git, ruff, docker, uv, shell", r"^(git|ruff|docker|uv|sh|bash|make|check-jsonschem)"),
]


@dataclass
class Process:
    comm: str
    cpu: float  # seconds, user and system
    pid: int
    ppid: int
    started: float  # epoch seconds
    command: str = ""


class CommandLines:
    """The command line of every process alive at some second of the run, by (pid, start)."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[int, str]] = collections.defaultdict(dict)  # pid: start: args
        stat = Path("/proc/stat").read_text().splitlines()
        self.boot = next(int(line.split()[1]) for line in stat if line.startswith("btime"))
        self.stop = threading.Event()

    def sample(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            start = int(stat.rsplit(")", 1)[1].split()[19])
            args = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            if args:  # a process keeps the last command line it ran (after exec)
                self.seen[int(entry.name)][start] = args

    def run(self) -> None:
        while not self.stop.wait(1):
            self.sample()

    def of(self, pid: int, started: float) -> str:
        """The command line of the process ``pid`` that started at ``started`` (epoch s)."""
        for start, args in self.seen.get(pid, {}).items():
            if abs(self.boot + start / TICKS_PER_SECOND - started) <= 1.5:
                return args
        return ""


def accounted(path: Path) -> list[Process]:
    """The processes the accounting file recorded: what dump-acct prints, one per line."""
    lines = subprocess.run(["dump-acct", str(path)], capture_output=True, text=True, check=True)
    processes = []
    for line in lines.stdout.splitlines():
        fields = [field.strip() for field in line.split("|")]
        began = time.mktime(time.strptime(fields[14], "%a %b %d %H:%M:%S %Y"))
        cpu = (float(fields[2]) + float(fields[3])) / ACCOUNTING_TICKS
        processes.append(Process(fields[0], cpu, int(fields[9]), int(fields[10]), began))
    return processes


def kind_of(process: Process, pytest_pid: int) -> str:
    if process.pid == pytest_pid or (process.ppid == pytest_pid and "exec(eval" in process.command):
        return PYTEST  # the run itself and its xdist workers (execnet's bootstrap line)
    described = readable(process.command) if process.command else process.comm
    for kind, pattern in KINDS:
        if re.search(pattern, described):
            return kind
    return f"other ({process.comm})"


def readable(command: str) -> str:
    """A command line without its temporary folders and interpreter paths, to group alike."""
    command = " ".join(command.split())  # `python -c` programs span lines
    command = re.sub(r"\S*/bin/", "", command)
    command = re.sub(r"/tmp/\S*?/(pytest-\d+|tmp\w+)\S*", "<tmp>", command)
    command = re.sub(r"\S*/\.tmp\w+/", "", command)  # uv's scratch folders
    return command[:110]


def print_report(processes: list[Process], pytest_pid: int, wall: float) -> None:
    total = sum(process.cpu for process in processes)
    cores = os.cpu_count() or 1
    busy = total / wall / cores
    print(f"{wall:,.0f} s of wall time, {total:,.0f} CPU-s ({busy:.0%} of {cores} cores)")
    by_kind: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for process in processes:
        sums = by_kind[kind_of(process, pytest_pid)]
        sums[0] += process.cpu
        sums[1] += 1
    print(f"\n{'CPU-s':>8} {'share':>6} {'processes':>9}  kind")
    for kind, (cpu, count) in sorted(by_kind.items(), key=lambda item: -item[1][0]):
        print(f"{cpu:8,.0f} {cpu / total:6.1%} {count:9,}  {kind}")
    by_command: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for process in processes:
        if process.command:
            sums = by_command[readable(process.command)]
            sums[0] += process.cpu
            sums[1] += 1
    print(f"\nThe heaviest command lines:\n{'CPU-s':>8} {'runs':>5}  command")
    for command, (cpu, count) in sorted(by_command.items(), key=lambda item: -item[1][0])[:20]:
        print(f"{cpu:8,.0f} {count:5}  {command}")


def main() -> int:
    missing = [tool for tool in ("accton", "dump-acct") if shutil.which(tool) is None]
    if missing:
        tools = " and ".join(missing)
        print(f"{tools}: not found. Install Debian's acct package.", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("Process accounting needs root (accton): run this as root.", file=sys.stderr)
        return 1
    lines = CommandLines()
    sampler = threading.Thread(target=lines.run, daemon=True)
    with tempfile.TemporaryDirectory() as folder:
        record = Path(folder) / "pacct"
        record.touch()
        subprocess.run(["accton", str(record)], check=True, capture_output=True)
        started = time.monotonic()
        sampler.start()
        tests = subprocess.Popen([sys.executable, "-m", "pytest", *sys.argv[1:]], cwd=ROOT)
        try:
            tests.wait()
        finally:
            wall = time.monotonic() - started
            lines.stop.set()
            subprocess.run(["accton", "off"], check=True, capture_output=True)
        processes = accounted(record)
    for process in processes:
        process.command = lines.of(process.pid, process.started)
    print(f"\n{shlex.join(['pytest', *sys.argv[1:]])}: exit code {tests.returncode}")
    print_report(processes, tests.pid, wall)
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
