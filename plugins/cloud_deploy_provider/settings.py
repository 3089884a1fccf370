"""Deployment-wide settings, read from ``CLOUD_DEPLOY_*`` environment variables.

They hold what differs between installations (proxies, mirrors, which engine and registry), not
what differs between projects (that is ``deployment.yaml``). Every value that reaches a build is
checked here, so a typo fails at start-up with the variable's name, not deep inside a build.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cloud_deploy_provider.errors import UserError

_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/%+-]*)?$")
_NETWORK_MODE = re.compile(r"^(?:host|bridge|none|default)$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


class SettingsError(UserError):
    """A ``CLOUD_DEPLOY_*`` variable holds a value that cannot be used."""


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _url(name: str) -> str | None:
    value = _env(name)
    if value is not None and not _URL.match(value):
        raise SettingsError(f"{name}: {value!r} is not an http(s) URL without credentials or query")
    return value


def _urls(name: str) -> tuple[str, ...]:
    value = _env(name)
    if value is None:
        return ()
    urls = tuple(value.split())
    for url in urls:
        if not _URL.match(url):
            raise SettingsError(f"{name}: {url!r} is not an http(s) URL without credentials or query")
    return urls


def _file(name: str) -> Path | None:
    value = _env(name)
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise SettingsError(f"{name}: {value} is not a readable file")
    return path


def _choice(name: str, pattern: re.Pattern[str], default: str | None) -> str | None:
    value = _env(name) or default
    if value is not None and not pattern.match(value):
        raise SettingsError(f"{name}: {value!r} is not one of {pattern.pattern}")
    return value


@dataclass(frozen=True)
class BuildSettings:
    """How images are built on this installation."""

    catalog_path: Path | None = None
    ca_bundle: Path | None = None
    pip_index_url: str | None = None
    pip_extra_index_urls: tuple[str, ...] = ()
    apt_mirror: str | None = None
    network_mode: str | None = None

    @classmethod
    def from_env(cls) -> BuildSettings:
        return cls(
            catalog_path=_file("CLOUD_DEPLOY_BASE_IMAGE_CATALOG"),
            ca_bundle=_file("CLOUD_DEPLOY_BUILD_CA_BUNDLE"),
            pip_index_url=_url("CLOUD_DEPLOY_PIP_INDEX_URL"),
            pip_extra_index_urls=_urls("CLOUD_DEPLOY_PIP_EXTRA_INDEX_URLS"),
            apt_mirror=_url("CLOUD_DEPLOY_APT_MIRROR"),
            network_mode=_choice("CLOUD_DEPLOY_BUILD_NETWORK", _NETWORK_MODE, None),
        )


@dataclass(frozen=True)
class EngineSettings:
    """Which Docker engine builds and runs containers, and where published ports bind."""

    docker_host: str = "unix:///var/run/docker.sock"
    publish_ip: str = "127.0.0.1"
    registry_conn_id: str | None = None

    @classmethod
    def from_env(cls) -> EngineSettings:
        return cls(
            docker_host=_env("CLOUD_DEPLOY_DOCKER_HOST") or _env("DOCKER_HOST") or cls.docker_host,
            publish_ip=_env("CLOUD_DEPLOY_PUBLISH_IP") or cls.publish_ip,
            registry_conn_id=_choice("CLOUD_DEPLOY_REGISTRY_CONN_ID", _CONN_ID, None),
        )


def _number(name: str, default: float, low: float, high: float) -> float:
    value = _env(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not low <= number <= high:
        raise SettingsError(f"{name}: {value!r} is not a number from {low:g} to {high:g}")
    return number


@dataclass(frozen=True)
class PipelineSettings:
    """How deploy runs treat failures and waits.

    ``retries``: tries after the first, with exponential backoff from ``retry_delay_seconds``, for a
    stage that failed on something passing (engine restarting, registry 5xx, throttling); user errors
    never retry. ``inline_wait_seconds``: how long the deploy task itself polls for readiness before
    the triggerer takes over the wait (deferring costs ~2.5 s; a local container is ready in ~1 s).
    """

    retries: int = 3
    retry_delay_seconds: float = 2.0
    max_retry_delay_seconds: float = 60.0
    inline_wait_seconds: float = 5.0

    @classmethod
    def from_env(cls) -> PipelineSettings:
        return cls(
            retries=int(_number("CLOUD_DEPLOY_STAGE_RETRIES", cls.retries, 0, 20)),
            retry_delay_seconds=_number("CLOUD_DEPLOY_RETRY_DELAY_SECONDS", cls.retry_delay_seconds, 0.5, 3600),
            max_retry_delay_seconds=_number("CLOUD_DEPLOY_MAX_RETRY_DELAY_SECONDS", cls.max_retry_delay_seconds, 1, 86400),
            inline_wait_seconds=_number("CLOUD_DEPLOY_INLINE_WAIT_SECONDS", cls.inline_wait_seconds, 0, 60),
        )
