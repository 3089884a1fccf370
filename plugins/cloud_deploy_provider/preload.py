"""Modules a deploy task needs, imported once by every Airflow process of the embedded stack.

The LocalExecutor forks its workers from the scheduler and each task from a worker: what the
scheduler has imported, every task starts with. Without this, each deploy task spends ~0.17 s of
CPU importing the spec models (pydantic), docker-py and httpx, and ~60 ms loading the CA bundle
into a TLS context for its registry client: on two cores and twenty projects at once, a fifth of all
the work. ``scripts/stack.sh`` writes an ``airflow_local_settings.py`` that calls :func:`preload`
(Airflow imports that file at start-up).

Only modules free of Airflow imports are listed: ``airflow_local_settings`` runs while Airflow's
own settings are still being set up.
"""

from __future__ import annotations

import importlib

MODULES = (
    "cloud_deploy_provider.pipeline",
    "cloud_deploy_provider.builder",
    "cloud_deploy_provider.registries.oci",
    "cloud_deploy_provider.errors",
    "cloud_deploy_provider.http_clients",
    "cloud_deploy_provider.targets.docker",
    "docker",
    "httpx",
)


def preload() -> None:
    for name in MODULES:
        importlib.import_module(name)
    from cloud_deploy_provider.http_clients import tls_context

    tls_context()  # an SSL context survives fork: every task inherits the loaded CA bundle
