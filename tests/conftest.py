"""The test session: its environment comes first (``tests.helpers`` sets Airflow's before anything imports it),
then the fixtures (the pytest plugin ``tests.standins.fixtures``).

Markers: ``docker`` is set on every test that uses the Docker engine (any fixture depending on
``docker_client``), so ``pytest -m "not docker"`` is the loop of seconds without an engine; ``e2e`` marks the
tests through a real api-server, scheduler and gateway.
"""

from __future__ import annotations

import tests.helpers  # noqa: F401  (the session's environment, before Airflow is imported)

pytest_plugins = ["tests.standins.fixtures"]


def pytest_collection_modifyitems(items):
    import pytest

    for item in items:
        if "docker_client" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)
