"""The base-image catalog: which image a build starts FROM, chosen by what the spec asks for."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.spec import DeploymentSpec

DEFAULT_CATALOG = "base_images.yaml"
MATCH_KEYS = ("accelerator", "vendor", "python_version", "engine", "os", "architecture")
_IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_INTERPRETER = re.compile(r"^(?:/[A-Za-z0-9._-]+)*/?[A-Za-z0-9._-]+$")


class CatalogError(UserError):
    """The catalog is malformed, or none of its images fits the spec."""


@dataclass(frozen=True)
class BaseImage:
    image: str
    python: str
    match: dict[str, str]


@dataclass(frozen=True)
class Catalog:
    source: str
    images: tuple[BaseImage, ...]

    def choose(self, spec: DeploymentSpec) -> BaseImage:
        request = request_of(spec)
        best: BaseImage | None = None
        for candidate in self.images:
            if all(request.get(key) == value for key, value in candidate.match.items()):
                if best is None or len(candidate.match) > len(best.match):
                    best = candidate
        if best is None:
            wanted = ", ".join(f"{k}={v}" for k, v in request.items() if v is not None)
            raise CatalogError(
                f"no base image in {self.source} fits {wanted}; add one to the catalog "
                "(CLOUD_DEPLOY_BASE_IMAGE_CATALOG)"
            )
        return best


def request_of(spec: DeploymentSpec) -> dict[str, str | None]:
    build = spec.build
    return {
        "accelerator": build.accelerator.type,
        "vendor": build.accelerator.vendor,
        "python_version": build.components.python_version,
        "engine": build.components.engine,
        "os": build.os,
        "architecture": build.architecture,
    }


def load_catalog(path: Path | None = None) -> Catalog:
    if path is None:
        text = resources.files("cloud_deploy_provider").joinpath(DEFAULT_CATALOG).read_text()
        source = f"the default catalog ({DEFAULT_CATALOG})"
    else:
        text = path.read_text()
        source = str(path)
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CatalogError(f"{source}: expected a mapping with a list under 'images'")
    return Catalog(source, tuple(_entry(source, i, e) for i, e in enumerate(data["images"])))


def _entry(source: str, index: int, entry: object) -> BaseImage:
    where = f"{source}: images[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
        raise CatalogError(f"{where}: expected a mapping with an 'image'")
    unknown = set(entry) - {"image", "python", *MATCH_KEYS}
    if unknown:
        raise CatalogError(f"{where}: unknown keys {sorted(unknown)}; allowed: image, python, {', '.join(MATCH_KEYS)}")
    if not _IMAGE_REF.match(entry["image"]):
        raise CatalogError(f"{where}: {entry['image']!r} is not an image reference")
    python = str(entry.get("python", "python3"))
    if not _INTERPRETER.match(python):
        raise CatalogError(f"{where}: python: {python!r} is not an interpreter name or path")
    match = {key: str(entry[key]) for key in MATCH_KEYS if key in entry}
    return BaseImage(image=entry["image"], python=python, match=match)
