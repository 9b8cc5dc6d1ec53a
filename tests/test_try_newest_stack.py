"""scripts/try_newest_stack.py finds the pins it lifts in the project it renders.

The script's own run installs the newest stack and starts every server (about ten minutes):
maintainers run it by hand (docs/maintainers.md, "Upgrading the pinned stack"). Checked
here is what would go wrong silently when the template's pins change shape: a package of
the stack pinned twice or no longer pinned, a cap gone, another pin lifted with them.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement

from helpers import TEMPLATE_ROOT


def load_script() -> ModuleType:
    path = TEMPLATE_ROOT / "scripts" / "try_newest_stack.py"
    spec = importlib.util.spec_from_file_location("try_newest_stack", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def declared(pyproject: Path) -> dict[str, str]:
    """Each requirement of the dependencies and the extras, by name: its specifier."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]
    return {req.name: str(req.specifier) for req in map(Requirement, lines)}


def test_the_stack_is_pinned_exactly_and_lifted_alone(render_project):
    script = load_script()
    pyproject = render_project("newest-stack", orchestrator="both") / "pyproject.toml"
    before = declared(pyproject)

    pinned = script.pinned_versions(pyproject)
    script.lift_pins(pyproject)
    after = declared(pyproject)

    assert sorted(pinned) == sorted(script.LIFTED)
    assert {name: f"=={version}" for name, version in pinned.items()} == {
        name: before[name] for name in script.LIFTED
    }
    assert {name: after[name] for name in script.LIFTED} == dict.fromkeys(script.LIFTED, "")
    for cap in map(Requirement, script.KEPT_CAPS):
        assert after[cap.name] == str(cap.specifier)
    untouched = {name: spec for name, spec in before.items() if name not in script.LIFTED}
    assert {name: after[name] for name in untouched} == untouched


def test_without_caps_the_caps_go_and_nothing_else(render_project):
    script = load_script()
    pyproject = render_project("newest-stack-uncapped", orchestrator="both") / "pyproject.toml"
    before = declared(pyproject)

    script.drop_caps(pyproject)
    after = declared(pyproject)

    capped = [Requirement(cap).name for cap in script.KEPT_CAPS]
    assert sorted(set(before) - set(after)) == sorted(capped)
    assert after == {name: spec for name, spec in before.items() if name not in capped}
