"""Connections made into ready clients, on top of the providers' hooks: the Docker engine, AWS (one boto3
client per service), Google Cloud, the ``extra.cloud_deploy`` defaults, and TANGO's ``.env`` fallbacks.

None of these is an Airflow hook (those live in ``hooks/``); each reads its Airflow connection once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

LOG_TAIL_LINES = 20  # what a failure message shows of a log
Found = TypeVar("Found")


class PlatformUser:
    """One project's use of one platform (a deploy target, a job runner): where it logs, the connection ids
    it was given (None: the installation's defaults), and its client, made by :meth:`connect` on first use
    (or the one passed in)."""

    def __init__(self, project: Any, log: Callable[[str], None] = print, client: Any = None,
                 conn_id: str | None = None, registry_conn_id: str | None = None):
        self.project = project
        self.log = log
        self._client = client
        self.conn_id = conn_id
        self.registry_conn_id = registry_conn_id

    def connect(self) -> Any:
        """The long-lived client (an API client, a session, a hook), made from the installation's settings."""
        raise NotImplementedError(f"{type(self).__name__} opens its clients per call")

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.connect()
        return self._client


def last_lines(lines: Iterable[str], count: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``count`` lines of a log, trailing white space stripped: what a failure message shows."""
    return [line.rstrip() for line in lines][-count:]


def poll_until(read: Callable[[], Found], done: Callable[[Found], bool], seconds: float, interval: float) -> Found:
    """``read()`` every ``interval`` until ``done`` says so or ``seconds`` pass; the last reading either way."""
    deadline = time.monotonic() + seconds
    while True:
        found = read()
        if done(found) or time.monotonic() >= deadline:
            return found
        time.sleep(min(interval, max(deadline - time.monotonic(), 0)))
