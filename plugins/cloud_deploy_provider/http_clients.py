"""HTTP clients that share one TLS context per process.

``httpx.Client()`` loads the CA bundle into a new SSL context each time it is made: ~30 ms of CPU,
paid on every readiness probe and every registry lookup when clients are made per call. The
context is made once here and shared (it is safe to share across clients and threads).
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def client(**options: Any) -> httpx.Client:
    """An ``httpx.Client`` with the shared TLS context (unless ``verify`` is given)."""
    options.setdefault("verify", tls_context())
    return httpx.Client(**options)


@functools.cache
def probe_client() -> httpx.Client:
    """One client for readiness probes in this process: connections are not reused (each probe asks afresh)."""
    return client(limits=httpx.Limits(max_keepalive_connections=0))
