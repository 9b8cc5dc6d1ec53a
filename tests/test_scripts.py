"""scripts/ensure-uv.sh: the set-up's first command brings uv by itself.

A teacher's machine may have Python 3 and no uv: the script installs the version the
template pins (pyproject.toml's dev group) into a private folder and prints its path; a uv
already on PATH is used as it is, and nothing is installed. The script runs here with a
PATH of hand-picked commands, so that no uv of this machine can answer in its place. The
install downloads uv from PyPI, once for the module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from helpers import TEMPLATE_ROOT

pytestmark = pytest.mark.xdist_group("scripts")

ENSURE_UV = TEMPLATE_ROOT / "scripts" / "ensure-uv.sh"
# What the script calls, besides python3 and uv.
COMMANDS = ("bash", "dirname", "grep", "tr")


def pinned_uv_version() -> str:
    pyproject = tomllib.loads((TEMPLATE_ROOT / "pyproject.toml").read_text())
    dev = pyproject["dependency-groups"]["dev"]
    return next(pin.removeprefix("uv==") for pin in dev if pin.startswith("uv=="))


def commands_without_uv(folder: Path) -> Path:
    """A folder of links to the commands the script needs and to a real python3 (a pyenv
    shim would need pyenv on PATH): a PATH of this folder alone has no uv."""
    folder.mkdir()
    for name in COMMANDS:
        (folder / name).symlink_to(shutil.which(name))
    (folder / "python3").symlink_to(Path(sys.base_prefix, "bin", "python3"))
    assert shutil.which("uv", path=folder) is None
    return folder


def with_uv(folder: Path) -> Path:
    """The same commands, and the uv of the template's environment."""
    uv = Path(sys.executable).parent / "uv"
    (folder / "uv").symlink_to(uv if uv.exists() else shutil.which("uv"))
    return folder


def ensure_uv(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(path / "bash"), str(ENSURE_UV), *args],
        env={**os.environ, "PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def printed_uv(run: subprocess.CompletedProcess[str]) -> Path:
    assert run.returncode == 0, run.stderr
    return Path(run.stdout.strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The PATH without uv, and the tools folder the script installed uv into."""
    root = tmp_path_factory.mktemp("ensure-uv")
    path, tools = commands_without_uv(root / "bin"), root / "tools"
    first = ensure_uv(path, str(tools))
    assert printed_uv(first) == tools / "bin" / "uv"
    assert f"Installing uv=={pinned_uv_version()}" in first.stderr
    return path, tools


def test_without_uv_on_path_it_installs_the_pinned_uv(installed: tuple[Path, Path]):
    path, tools = installed
    uv = tools / "bin" / "uv"
    version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[:2] == ["uv", pinned_uv_version()]

    again = ensure_uv(path, str(tools))

    assert printed_uv(again) == uv
    assert again.stderr == "", "installed once, then reused"


def test_a_uv_on_path_is_used_and_nothing_installed(tmp_path: Path):
    path = with_uv(commands_without_uv(tmp_path / "bin"))
    tools = tmp_path / "tools"

    run = ensure_uv(path, str(tools))

    assert printed_uv(run) == path / "uv"
    assert run.stderr == ""
    assert not tools.exists()


def test_pinned_ignores_the_uv_on_path(installed: tuple[Path, Path], tmp_path: Path):
    """CI's choice: the pinned uv of the tools folder, whatever uv the machine has."""
    _, tools = installed
    path = with_uv(commands_without_uv(tmp_path / "bin"))

    run = ensure_uv(path, "--pinned", str(tools))

    assert printed_uv(run) == tools / "bin" / "uv"
    assert run.stderr == ""


def test_a_python_without_venv_gets_one_line_saying_what_to_install(tmp_path: Path):
    path = commands_without_uv(tmp_path / "bin")
    no_venv = path / "python3"
    no_venv.unlink()
    no_venv.write_text("#!/bin/sh\necho 'No module named venv' >&2\nexit 1\n")
    no_venv.chmod(0o755)

    run = ensure_uv(path, str(tmp_path / "tools"))

    assert run.returncode != 0
    assert run.stdout == ""
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert "install python3-venv" in run.stderr
