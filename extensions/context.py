"""Derived values that every template file can use."""

from __future__ import annotations

import math

from copier_template_extensions import ContextHook


class DerivedContext(ContextHook):
    """Add booleans so that file names and templates avoid repeating list tests."""

    def hook(self, context: dict) -> None:
        orchestrator = context.get("orchestrator", "both")
        context["use_prefect"] = orchestrator in ("prefect", "both")
        context["use_dagster"] = orchestrator in ("dagster", "both")
        # With both, Prefect is the main track and Dagster an opt-in extra (compose profile).
        context["dagster_is_bonus"] = orchestrator == "both"
        context["extras"] = [
            name
            for name, wanted in (
                ("prefect", context["use_prefect"]),
                ("dagster", context["use_dagster"]),
                ("notebooks", context.get("include_notebooks", True)),
            )
            if wanted
        ]
        # Dagster's code locations, each served by a code server of its own: the reference
        # pipeline, part 1's task-style job, the exercise, and in the teacher's copy the
        # exercise's solution. Named once for make dev, the workspace and compose.
        exercises = "pipelines/workshop/dagster/Dagster_Exercises"
        locations = {
            "churn_pipeline": "pipelines/examples/Dagster_ML_Pipeline.py",
            "churn_workshop": "pipelines/workshop/dagster/Dagster_Workshop.py",
            "churn_exercises": f"{exercises}.py",
        }
        if context.get("include_solutions", False):
            locations["churn_exercises_solution"] = f"{exercises}_solution.py"
        context["dagster_code_locations"] = locations
        # The memory the servers take idle, for the project README's prerequisites, in MiB as
        # bench/bench_docker.py measured it (December 2026): MLflow; Prefect's server and
        # worker; Dagster's webserver and daemon, and a code server per location.
        mib = 400
        if context["use_prefect"]:
            mib += 313
        if context["use_dagster"]:
            mib += 250 + 370 * len(locations)
        context["servers_memory_gb"] = math.ceil(mib * 2**20 / 10**8) / 10  # GB, rounded up
        # Seconds between a Prefect flow run's heartbeats (Prefect's minimum), named once for
        # the native worker's config and the container's.
        context["prefect_heartbeat_seconds"] = 30
        # The classroom's names that its compose files, Makefile, scripts and Python code
        # share: the class's Prefect work pool, the image every classroom container and
        # class flow run uses, and the Docker volume holding the class workers' MLflow login.
        slug = context.get("project_slug", "")
        context["classroom_pool"] = "class-pool"
        context["classroom_image"] = f"{slug}-classroom:latest"
        context["classroom_worker_volume"] = f"{slug}-class-worker"
        context["python_tag"] = "py" + str(context.get("python_version", "3.12")).replace(".", "")
