"""Starting and stopping the local servers: ports, health checks, process groups.

``make dev`` (``devstack``) and ``make serve`` (``serving``) both start servers
as child processes; what they share lives here, with no heavy imports.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import requests

from .errors import WorkshopError
from .messages import text

POLL_SECONDS = 0.5


class UnsafeDirectoryError(WorkshopError, PermissionError):
    """A folder meant for this user alone belongs to someone else, or others may write in it."""


def private_directory(path: Path) -> Path:
    """``path``, made if missing, for this user alone (mode 700); refused if it is not.

    A folder whose name anyone can guess (in /tmp, on a shared classroom machine) may
    have been made by someone else first, to take what is put in it.
    """
    path.mkdir(mode=0o700, exist_ok=True)
    found = path.lstat()
    if (
        not stat.S_ISDIR(found.st_mode)
        or found.st_uid != os.getuid()
        or stat.S_IMODE(found.st_mode) & 0o077
    ):
        raise UnsafeDirectoryError(text("processes.unsafe_directory", directory=path))
    return path


class ProcessExitedError(RuntimeError):
    """The server died before it was healthy; callers add where its log is."""


class HealthTimeoutError(RuntimeError):
    """The server did not answer its health check in time."""


def venv_tool(name: str) -> str:
    """An executable of the running virtual environment, found even if it is not on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def venv_environment(**extra: str) -> dict[str, str]:
    """This environment plus ``extra``, the venv's ``bin`` first on PATH.

    Servers exec helpers by name (MLflow's model server runs ``uvicorn``), and
    they must find this environment's copies, not whatever PATH holds.
    """
    env = {**os.environ, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now.

    SO_REUSEADDR, as the servers themselves set it: right after a restart the old
    connections linger in TIME_WAIT, which blocks a plain bind but not a server.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def listens_on(socket_path: Path) -> bool:
    """Whether a server accepts connections on a Unix socket (a stale file does not).

    The path is made relative to the working directory, as the servers name it: a Unix
    socket's path may not exceed 107 bytes, and a project folder can be deep.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(os.path.relpath(socket_path))
        except OSError:
            return False
    return True


def wait_until_healthy(process: subprocess.Popen, url: str, timeout: float) -> None:
    """Poll ``url`` until it answers 200; raise if the process dies or the deadline passes."""
    wait_for(process, lambda: answers(url), url, timeout)


def wait_until_listening(process: subprocess.Popen, socket_path: Path, timeout: float) -> None:
    """Wait until the server listens on ``socket_path``, as ``wait_until_healthy`` does."""
    wait_for(process, lambda: listens_on(socket_path), str(socket_path), timeout)


def wait_for(
    process: subprocess.Popen, healthy: Callable[[], bool], where: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProcessExitedError(text("processes.exited_during_start", code=process.returncode))
        if healthy():
            return
        time.sleep(POLL_SECONDS)
    raise HealthTimeoutError(text("processes.not_healthy", where=where, timeout=timeout))


def stop_process_groups(processes: list[subprocess.Popen], timeout: float) -> None:
    """Stop each process group in the reverse order of their start, one after the other:
    SIGTERM, then SIGKILL if it outlives ``timeout``.

    Clients stop before the servers they talk to, as Compose stops a service before those
    it depends on: a worker stopped mid-run can still report its flow run's end to a
    Prefect server that is up. Each server runs in a session of its own, so its group also
    holds the processes it spawned (MLflow's uvicorn worker, a Prefect flow run).
    """
    for process in reversed(processes):
        if process.poll() is None:
            with suppress(ProcessLookupError):  # it may exit between the two calls
                os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def process_status(pid: int) -> tuple[str, str] | None:
    """``ps``'s state letter and start time of ``pid``; None when it is gone or a zombie.

    The start time makes a recorded PID an identity: after a reboot the same number
    may belong to another program, which must never be stopped by mistake.
    """
    try:
        shown = subprocess.run(
            ["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True
        ).stdout.strip()
    except FileNotFoundError:  # no `ps` on this system: nothing can be recognised
        return None
    state, _, started = shown.partition(" ")
    return None if not shown or state.startswith("Z") else (state, started.strip())


def remember_process_groups(
    processes: list[subprocess.Popen], record: Path, owner: int | None = None
) -> None:
    """Write the owner's and each server's PID and start time, the owner first.

    The owner is the process that started the servers (``make dev``, this process by
    default). While it runs, its servers are its own business; once it is gone, the
    record tells the next start what it left running.
    """
    pids = [owner or os.getpid(), *(process.pid for process in processes)]
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("".join(f"{identity(pid)}\n" for pid in pids))


def identity(pid: int) -> str:
    """A record line: ``pid`` and its start time, tab-separated ("gone" if it has ended)."""
    status = process_status(pid)
    return f"{pid}\t{status[1] if status else 'gone'}"


def still_running(line: str) -> int | None:
    """The PID of a record line if that very process (same start time) still runs."""
    pid, _, started = line.partition("\t")
    status = process_status(int(pid))
    return int(pid) if status and status[1] == started else None


def stop_leftover_process_groups(records: Path, timeout: float) -> list[int]:
    """Stop the servers that killed predecessors recorded and left running; return their PIDs.

    ``make dev`` killed hard (SIGKILL, a crash) cannot stop its servers: they keep their
    ports. The next start finds them in ``records`` (one file per start), by PID and
    start time, and stops them. A record whose owner still runs belongs to a `make dev`
    or `make mlflow` in another terminal: its servers are left alone.
    """
    leftovers = []
    for record in sorted(records.glob("*.pids")):
        owner, *servers = record.read_text().splitlines() or [""]
        if owner and still_running(owner):
            continue
        leftovers += [pid for line in servers if (pid := still_running(line))]
        record.unlink()
    for pid in leftovers:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(process_status(pid) for pid in leftovers) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    for pid in leftovers:
        if process_status(pid):
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    return leftovers
