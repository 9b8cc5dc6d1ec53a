"""Every combination of the choice questions renders a clean project.

For each one: exactly the expected files, the answers recorded, no Jinja left,
Python and notebooks parse, YAML loads, ruff passes, CI files match their schema.
"""

from __future__ import annotations

import ast
import hashlib
import io
import itertools
import re
import subprocess
import tokenize
from pathlib import Path

import nbformat
import pytest
import yaml

from expected_files import SOLUTIONS, expected_files
from helpers import (
    DEFAULT_PACKAGE,
    DEV_BIN,
    TEMPLATE_ROOT,
    copier_choices,
    foreign_sentences,
    render,
)

# The yes/no questions the matrix varies. include_solutions is left out: it only adds
# notebooks, and test_solutions_reach_only_the_teachers_copy checks it.
MATRIX_BOOLS = ("include_notebooks", "include_airflow")
# Every Jinja delimiter, however it is spaced (`{{x}}`, `{%if x%}`)...
JINJA_DELIMITER = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")
# ...except in the forms a rendered project writes on purpose, each allowed by name.
NOT_JINJA = {
    "a GitHub Actions expression": r"\$\{\{ [^{}\n]* \}\}",
    "a Prefect placeholder, filled in by the worker": r"\{\{ \$[A-Z_]+ \}\}",
    "a percentage in an f-string": r":\.\d+%\}",
    "a mapping that closes the mapping holding it": r": \{[^{}\n]*\}\}",
}
CI_SCHEMAS = {
    ".github/workflows/ci.yml": "vendor.github-workflows",
    ".gitlab-ci.yml": "vendor.gitlab-ci",
}
_validated: set[str] = set()  # CI file contents already validated by this worker


def accepted_answers(question: dict) -> list:
    """The values a question accepts: both booleans, or its choices' values.

    copier.yml writes choices as a list of values or as a mapping label -> value.
    """
    if question.get("type") == "bool":
        return [True, False]
    choices = question["choices"]
    return list(choices.values()) if isinstance(choices, dict) else list(choices)


def matrix_questions(copier_yml: Path) -> dict[str, list]:
    """Every choice question of copier.yml, plus MATRIX_BOOLS, with the answers each accepts.

    Read from copier.yml itself, so a new choice is rendered and checked without retyping it.
    """
    questions = yaml.safe_load(copier_yml.read_text())
    return {
        name: accepted_answers(question)
        for name, question in questions.items()
        if not name.startswith("_") and ("choices" in question or name in MATRIX_BOOLS)
    }


def all_combinations(matrix: dict[str, list]) -> list[dict]:
    """One answers dict per combination of the matrix's values."""
    value_tuples = itertools.product(*matrix.values())
    return [dict(zip(matrix, values, strict=True)) for values in value_tuples]


MATRIX = matrix_questions(TEMPLATE_ROOT / "copier.yml")
COMBINATIONS = all_combinations(MATRIX)


def combination_id(answers: dict) -> str:
    """Readable and selectable with -k, e.g. ``prefect-discord-gitlab-nb-no_airflow-fr-py3_12``."""
    return "-".join(
        [
            answers["orchestrator"],
            answers["notifications"],
            answers["ci"],
            "nb" if answers["include_notebooks"] else "no_nb",
            "airflow" if answers["include_airflow"] else "no_airflow",
            answers["docs_language"],
            "py" + answers["python_version"].replace(".", "_"),
        ]
    )


def rendered_files(project: Path) -> set[str]:
    return {str(path.relative_to(project)) for path in project.rglob("*") if path.is_file()}


def check_no_jinja_leftovers(project: Path) -> None:
    for relative in rendered_files(project):
        if relative.endswith(".png"):
            continue  # the guide's screenshots: copied as they are, never rendered
        text = (project / relative).read_text(errors="replace")
        for allowed in NOT_JINJA.values():
            text = re.sub(allowed, "", text)
        left = JINJA_DELIMITER.search(text)
        assert not left, (
            f"Jinja marker left in {relative}: {text[left.start() - 40 : left.end() + 40]!r}"
        )


def check_sources_parse(project: Path) -> None:
    """Every source parses, and none edits the import path: modules import the package."""
    for path in project.rglob("*.py"):
        source = path.read_text()
        ast.parse(source, filename=str(path))
        assert "sys.path" not in source, f"{path.relative_to(project)} edits sys.path"
    for path in project.rglob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    for path in [*project.rglob("*.yml"), *project.rglob("*.yaml")]:
        yaml.safe_load(path.read_text())


def check_local_links(project: Path) -> None:
    """Every link and image of the Markdown docs that points into the project exists."""
    for page in project.rglob("*.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:|#|<", target):
                continue  # a web address, an anchor or a placeholder
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(project)} links to missing {target}"


def check_commands_exist(project: Path) -> None:
    """Every command the docs give a student exists in this render: each `make` verb is a
    Makefile target, each `python path/to/script.py` a file, each `python -m <package> verb`
    a sub-command of the package's command line."""
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (project / "Makefile").read_text(), re.M))
    cli = (project / "src" / DEFAULT_PACKAGE / "__main__.py").read_text()
    verbs = set(re.findall(r'add_parser\(\s*"([a-z-]+)"', cli))
    for page in [project / "README.md", *project.glob("docs/*.md")]:
        # Commands are code: fenced blocks and `inline` spans, not prose ("make it a flow").
        text = "\n".join(re.findall(r"```.*?```|`[^`\n]+`", page.read_text(), re.S))
        where = page.relative_to(project)
        # (`make dagster-*` names a family of verbs, not one)
        for verb in re.findall(r"(?<![\w-])make ([a-z][a-z0-9-]*[a-z0-9])(?![\w*-])", text):
            assert verb in targets, f"{where} gives `make {verb}`, which the Makefile lacks"
        for script in re.findall(r"python3? ((?:pipelines/|generate_)[\w/.-]+\.py)", text):
            assert (project / script).is_file(), f"{where} runs {script}, not in this render"
        for verb in re.findall(rf"python -m {DEFAULT_PACKAGE} ([a-z][a-z-]*)", text):
            assert verb in verbs, f"{where} gives `python -m {DEFAULT_PACKAGE} {verb}`"


def run_tool(*args: str | Path, cwd: Path) -> None:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}\n{result.stderr}"


def validate_once(path: Path, *validator: str | Path) -> None:
    """Validate each distinct file content once: identical text, identical verdict."""
    digest = hashlib.sha256(path.read_bytes() + repr(validator).encode()).hexdigest()
    if digest not in _validated:
        run_tool(*validator, path, cwd=path.parent)
        _validated.add(digest)


def check_precommit_ruff_matches_dev_group(project: Path) -> None:
    """The hook and `ruff` in the dev group must agree, or they format differently."""
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    [ruff_hooks] = [r for r in config["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    pinned = f'"ruff=={ruff_hooks["rev"].removeprefix("v")}"'
    assert pinned in (project / "pyproject.toml").read_text(), pinned


def test_matrix_follows_copier_yml():
    """A new choice question or answer multiplies the renders: this test makes it a choice.

    Every id must be distinct too, or `-k` would select the wrong renders.
    """
    assert set(MATRIX) == {
        "orchestrator",
        "notifications",
        "python_version",
        "ci",
        "include_notebooks",
        "include_airflow",
        "docs_language",
    }
    assert len(COMBINATIONS) == 3 * 3 * 3 * 3 * 2 * 2 * 2 == 648
    assert len({combination_id(answers) for answers in COMBINATIONS}) == len(COMBINATIONS)


@pytest.mark.parametrize("answers", COMBINATIONS, ids=combination_id)
def test_combination_renders_a_clean_project(answers: dict, template_dir: Path, tmp_path: Path):
    project = render(template_dir, tmp_path / "project", **answers)

    files = rendered_files(project)
    expected = expected_files({**answers, "package_name": DEFAULT_PACKAGE})
    assert files == expected, (
        f"missing: {sorted(expected - files)}; unexpected: {sorted(files - expected)}"
    )

    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert {key: recorded[key] for key in answers} == answers
    assert ("prefect_port" in recorded) == (answers["orchestrator"] != "dagster")
    assert ("dagster_port" in recorded) == (answers["orchestrator"] != "prefect")

    check_no_jinja_leftovers(project)
    check_sources_parse(project)
    check_local_links(project)
    check_commands_exist(project)
    run_tool(DEV_BIN / "ruff", "check", "--no-cache", ".", cwd=project)
    run_tool(DEV_BIN / "ruff", "format", "--check", "--no-cache", ".", cwd=project)
    for relative, schema in CI_SCHEMAS.items():
        if relative in files:
            validate_once(
                project / relative, DEV_BIN / "check-jsonschema", "--builtin-schema", schema
            )
    validate_once(project / ".pre-commit-config.yaml", DEV_BIN / "pre-commit", "validate-config")
    check_precommit_ruff_matches_dev_group(project)


def test_custom_answers_reach_every_file_that_names_them(render_project):
    project = render_project(
        "custom",
        project_name="Atelier Été 2026",
        author_email="prof@ecole.fr",
        mlflow_port=5100,
        prefect_port=4300,
        dagster_port=3100,
        schedule_cron="30 6 * * MON-FRI",
        schedule_timezone="Europe/Paris",
        notifications="discord",
    )
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["project_slug"] == "atelier-ete-2026"
    assert answers["package_name"] == "atelier_ete_2026"
    env = (project / ".env.example").read_text()
    for line in [
        "MLFLOW_PORT=5100",
        "PREFECT_PORT=4300",
        "DAGSTER_PORT=3100",
        "PREFECT_API_URL=http://127.0.0.1:4300/api",
        "DISCORD_WEBHOOK_URL=\n",
    ]:
        assert line in env
    config = (project / "src/atelier_ete_2026/config.py").read_text()
    assert 'SCHEDULE_CRON = "30 6 * * MON-FRI"' in config
    assert 'SCHEDULE_TIMEZONE = "Europe/Paris"' in config
    assert 'name = "atelier-ete-2026"' in (project / "pyproject.toml").read_text()
    assert "http://localhost:5100" in (project / "README.md").read_text()
    cheatsheet = (project / "docs/mlflow_cheatsheet.md").read_text()
    assert "http://127.0.0.1:5101/invocations" in cheatsheet  # SERVING_PORT's default
    assert "from atelier_ete_2026.config import load_settings" in cheatsheet
    run_tool(DEV_BIN / "ruff", "check", "--no-cache", ".", cwd=project)


def test_docs_follow_the_chosen_language(render_project):
    titles = {}
    for language in ("en", "fr"):
        docs = render_project(f"docs-{language}", docs_language=language) / "docs"
        pages = docs.glob("*.md")  # docs/images/ holds the Docker guide's screenshots
        titles[language] = {path.name: path.read_text().splitlines()[0] for path in pages}
    assert titles["fr"] == {
        "mlflow_cheatsheet.md": "# Aide-mémoire MLflow",
        "orchestrators.md": "# Guide des orchestrateurs",
        "prefect.md": "# Parcours Prefect",
        "dagster.md": "# Parcours Dagster (bonus)",
        "README_DOCKER.md": "# Guide Docker : la pile de l’atelier dans Docker Compose",
        "classroom.md": "# Le serveur de classe",
    }
    assert titles["en"] == {
        "mlflow_cheatsheet.md": "# MLflow cheat sheet",
        "orchestrators.md": "# Orchestrator guide",
        "prefect.md": "# Prefect track",
        "dagster.md": "# Dagster track (bonus)",
        "README_DOCKER.md": "# Docker guide: the workshop's stack in Docker Compose",
        "classroom.md": "# The classroom server",
    }


def test_secrets_are_never_answers(render_project):
    """The webhook URL is not a question: it can only come from the environment."""
    questions = yaml.safe_load((TEMPLATE_ROOT / "copier.yml").read_text())
    assert not any("url" in name or "password" in name or "secret" in name for name in questions)
    project = render_project("secret", notifications="slack")
    assert "SLACK_WEBHOOK_URL=\n" in (project / ".env.example").read_text()
    assert ".env\n" in (project / ".gitignore").read_text()


def test_solutions_reach_only_the_teachers_copy(render_project):
    """The solved files are in the teacher's copy, and nowhere in a student's: not as files,
    not as the solutions' code inside the files students edit."""
    teacher = render_project("teacher", include_solutions=True)
    student = render_project("student")
    solutions = {path for group in SOLUTIONS.values() for path in group}
    assert all((teacher / path).is_file() for path in solutions)
    assert not [path for path in solutions if (student / path).exists()]
    assert "# SOLUTION" not in (student / "notebooks/01b_mlflow_transition.ipynb").read_text()
    exercises = (student / "pipelines/workshop/prefect/Prefect_Exercises.py").read_text()
    assert "\n@flow" not in exercises and "\n@task" not in exercises
    no_notebooks = render_project("no-notebooks", include_notebooks=False, include_solutions=True)
    assert not (no_notebooks / "notebooks").exists()
    solved_scripts = SOLUTIONS["prefect"] | SOLUTIONS["dagster"]
    assert all((no_notebooks / path).is_file() for path in solved_scripts)


def reader_text(source: str) -> str:
    """What a student reads in a script besides its code: its comments and docstrings.

    A comment keeps its indentation after "# " (a code sample in a comment stays code for
    ``foreign_sentences``); a docstring is cleaned as ``help()`` shows it.
    """
    lines = [
        token.string.removeprefix("#").removeprefix(" ")
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            lines += (ast.get_docstring(node) or "").splitlines()
    return "\n".join(lines)


def test_scripts_read_in_the_class_language(render_project):
    """The workshop's scripts and the reference pipelines explain themselves in the class's
    language: no comment or docstring line of a French render is English, nor the reverse.
    Each script is also read as the other language, where its text must be foreign: the
    check reads the text it means to read."""
    languages = copier_choices("docs_language")
    scripts = {}
    for language in languages:
        project = render_project(
            f"scripts-{language}",
            docs_language=language,
            orchestrator="both",
            include_airflow=True,
            include_solutions=True,
        )
        scripts[language] = {
            str(path.relative_to(project)): reader_text(path.read_text())
            for path in project.glob("pipelines/*/**/*.py")  # workshop/<tool>/ and examples/
        }
    first, *others = languages
    assert all(set(scripts[other]) == set(scripts[first]) for other in others)
    assert len(scripts[first]) == 9, sorted(scripts[first])  # 3 Prefect, 3 Dagster, 3 examples
    for language in languages:
        for script, text in scripts[language].items():
            foreign = foreign_sentences(text, language)
            assert not foreign, f"{script} ({language}) has lines in another language: {foreign}"
            for other in set(languages) - {language}:
                assert foreign_sentences(text, other), f"{script} ({language}): nothing was read"


def markdown_prose(markdown: str) -> str:
    """A Markdown page without its fenced code blocks: commands are not sentences."""
    lines, in_code = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code:
            lines.append(line)
    return "\n".join(lines)


def test_docs_read_in_the_class_language(render_project):
    """The README, the guides, the cheat sheet and the Airflow overview of a render are
    written in its language only; read as another language, each one is foreign (the
    check reads text, not an empty page)."""
    languages = copier_choices("docs_language")
    pages = {}
    for language in languages:
        project = render_project(
            f"docs-{language}", docs_language=language, orchestrator="both", include_airflow=True
        )
        found = [
            project / "README.md",
            *project.glob("docs/*.md"),
            *project.glob("pipelines/**/*.md"),
        ]
        pages[language] = {
            str(p.relative_to(project)): markdown_prose(p.read_text()) for p in found
        }
    first, *others = languages
    assert all(set(pages[other]) == set(pages[first]) for other in others), pages.keys()
    for language in languages:
        for page, text in pages[language].items():
            foreign = foreign_sentences(text, language)
            assert not foreign, f"{page} ({language}) has lines in another language: {foreign}"
            for other in set(languages) - {language}:
                assert len(foreign_sentences(text, other)) > 5, f"{page} ({language}): unread"


def hash_comments(text: str) -> str:
    """The comments of a Makefile, a .env file, a Dockerfile or a compose file: each line
    that starts with "#", and what follows "  # " at the end of a line. A commented-out
    setting (``# SERVING_PORT=5001``) is code, which ``foreign_sentences`` leaves out."""
    lines = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            lines.append(line.lstrip().lstrip("#").strip())
        elif "  # " in line:
            lines.append(line.split("  # ", 1)[1])
    return "\n".join(lines)


def test_root_files_read_in_the_class_language(render_project):
    """What `make help` prints, the comments of the Makefile, .env.example, the Dockerfile,
    docker-compose.yml and the classroom server's files, and the docstring of
    generate_sample_data.py are in the class's
    language: no line of a French render is English, nor the reverse; read as the other
    language, each is foreign (the check reads text). `make help` lists every verb, its
    descriptions in one column."""
    languages = copier_choices("docs_language")
    texts = {}
    for language in languages:
        project = render_project(
            f"root-{language}", docs_language=language, orchestrator="both", include_airflow=True
        )
        makefile = (project / "Makefile").read_text()
        result = subprocess.run(["make", "help"], cwd=project, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        listed = re.findall(r"^  (\S+) +\S", result.stdout, re.M)
        assert listed == re.findall(r"^([a-z][a-z0-9-]*):.* ## \S", makefile, re.M)
        columns = {len(match) for match in re.findall(r"^  \S+ +(?=\S)", result.stdout, re.M)}
        assert len(columns) == 1, f"make help ({language}) is not aligned:\n{result.stdout}"
        descriptions = [line.split(maxsplit=1)[1] for line in result.stdout.splitlines()]
        texts[language] = {
            "make help": "\n".join(descriptions),
            "Makefile": hash_comments(makefile),
            ".env.example": hash_comments((project / ".env.example").read_text()),
            "Dockerfile": hash_comments((project / "Dockerfile").read_text()),
            "docker-compose.yml": hash_comments((project / "docker-compose.yml").read_text()),
            "generate_sample_data.py": reader_text(
                (project / "generate_sample_data.py").read_text()
            ),
        }
        for path in sorted((project / "classroom").rglob("*")):  # the classroom server's files
            if path.is_file():
                texts[language][str(path.relative_to(project))] = hash_comments(path.read_text())
    for language in languages:
        for name, text in texts[language].items():
            foreign = foreign_sentences(text, language)
            assert not foreign, f"{name} ({language}) has lines in another language: {foreign}"
            for other in set(languages) - {language}:
                assert foreign_sentences(text, other), f"{name} ({language}): nothing was read"
