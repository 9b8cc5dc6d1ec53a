"""Fixtures of the template's tests.

Rendering uses a plain-folder snapshot of the working tree, so tests see
uncommitted changes. Each rendered project runs in the environment its own
pyproject.toml and Python answer ask for: built once per distinct set of
dependencies and Python version (across xdist workers, under a file lock) and
shared by every project that asks for the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from helpers import (
    BASE_IMAGE,
    TEMPLATE_ROOT,
    ProjectEnv,
    create_project_env,
    engine_answers,
    environment_key,
    render,
    shared_tmp,
    snapshot_template,
    unavailable,
)


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGINT back its default when the run started as a background job.

    A shell starts `command &` with SIGINT ignored, and every process the tests start
    inherits that: the Ctrl+C they send, as a student presses it (to `make dev`,
    `serve-model`, a deploy script), would do nothing. A handler, unlike "ignored", is
    reset in each child, so the children get SIGINT's default again.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def render_project(
    template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """Render with the given answers into a fresh folder named after ``name``."""

    def _render(name: str, **answers: object) -> Path:
        return render(template_dir, tmp_path_factory.mktemp(name) / "project", **answers)

    return _render


@pytest.fixture(scope="session")
def project_env_for(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Callable[[Path], ProjectEnv]:
    """The environment of a rendered project: its own dependencies, on its own Python."""
    shared = shared_tmp(tmp_path_factory, worker_id)

    def _env_for(project: Path) -> ProjectEnv:
        venv = shared / f"project-env-{environment_key(project)}"
        with FileLock(f"{venv}.lock"):
            return create_project_env(venv, project)

    return _env_for


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under ``CI=true`` a skip is a failure: CI installs everything the tests need, so a
    test that skips there checks nothing and must not count as passed."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true, where nothing may skip: {reason}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each fault's figures (injection to detection, to recovery), as the tests recorded them."""
    reports = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])]
    figures = [
        value for r in reports for name, value in r.user_properties if name == "fault figures"
    ]
    if figures:
        terminalreporter.section("fault figures")
        for line in figures:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def base_image() -> str:
    """No registry is reachable here: the base image is built from Debian's packages."""
    if not engine_answers():
        unavailable("no Docker engine answers `docker info`")
    present = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True)
    if present.returncode != 0:
        script = TEMPLATE_ROOT / ".ci" / "build-base-image.sh"
        built = subprocess.run(["bash", str(script), BASE_IMAGE], capture_output=True, text=True)
        if built.returncode != 0:
            unavailable(f"cannot build {BASE_IMAGE}: {built.stderr.strip()[-500:]}")
    return BASE_IMAGE
