"""The rule tests/conftest.py enforces: under CI=true a skip is a failure, elsewhere a skip.

Checked on a probe module run by pytest beside a copy of the real conftest and helpers,
a skip in the test and one in a fixture (as the Docker tests skip without an engine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TEMPLATE_ROOT

PROBE = """
import pytest

@pytest.fixture
def engine():
    pytest.skip("no engine")

def test_skips_in_its_body():
    pytest.skip("nothing to check")

def test_skips_in_a_fixture(engine):
    pass
"""


def run_probe(folder: Path, ci: str) -> subprocess.CompletedProcess[str]:
    for name in ("conftest.py", "helpers.py"):
        shutil.copy(TEMPLATE_ROOT / "tests" / name, folder / name)
    (folder / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "CI": ci}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    command += ["-c", os.devnull, "--rootdir", str(folder), str(folder)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("ci", "closing"), [("true", "1 failed, 1 error"), ("", "2 skipped")])
def test_a_skip_fails_only_under_ci(tmp_path: Path, ci: str, closing: str):
    result = run_probe(tmp_path, ci)
    assert closing in result.stdout.strip().splitlines()[-1], result.stdout + result.stderr
    if ci:
        assert result.returncode == 1
        assert "skipped under CI=true, where nothing may skip" in result.stdout
