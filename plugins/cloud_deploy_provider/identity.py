"""Who a deployment belongs to, and the names and labels every resource of it carries.

user_id and project_id come from HTTP query strings and DAG params and end up in file paths,
DAG run ids, container names and labels, so they are held to one strict grammar here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cloud_deploy_provider.errors import UserError

IDENTIFIER_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)

LABEL_PREFIX = "io.cloud-deploy"
LABEL_USER = f"{LABEL_PREFIX}.user"
LABEL_PROJECT = f"{LABEL_PREFIX}.project"
LABEL_SERVICE = f"{LABEL_PREFIX}.service"
LABEL_KEY = f"{LABEL_PREFIX}.key"


class InvalidIdentifier(UserError):
    """A user_id or project_id that does not follow the identifier grammar."""


def validate_identifier(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidIdentifier(f"{field}: required (letters, digits, '_', '.', '-'; at most 64)")
    if not _IDENTIFIER.match(value) or ".." in value:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidIdentifier(
            f"{field}: {shown!r} is not a valid identifier (1-64 letters, digits, '_', '.', '-', "
            "starting and ending with a letter or digit, no '..')"
        )
    return value


@dataclass(frozen=True)
class ProjectRef:
    """A validated (user_id, project_id) pair."""

    user_id: str
    project_id: str

    def __post_init__(self) -> None:
        validate_identifier("user_id", self.user_id)
        validate_identifier("project_id", self.project_id)

    @property
    def key(self) -> str:
        """A stable, collision-free key; '~' cannot occur in identifiers."""
        return f"{self.user_id}~{self.project_id}"

    def resource_name(self, service_name: str, max_length: int = 63) -> str:
        """A name for a target resource, lowercase and within ``max_length``.

        Two projects whose readable name would collide (after lowercasing or truncation) still
        differ, because a short hash of the exact identity is appended.
        """
        digest = hashlib.sha256(f"{self.key}~{service_name}".encode()).hexdigest()[:8]
        readable = re.sub(r"[^a-z0-9-]+", "-", f"{self.user_id}-{self.project_id}-{service_name}".lower())
        readable = readable.strip("-")[: max_length - len(digest) - 4].strip("-")
        return f"cd-{readable}-{digest}"

    def labels(self, service_name: str) -> dict[str, str]:
        return {
            LABEL_USER: self.user_id,
            LABEL_PROJECT: self.project_id,
            LABEL_SERVICE: service_name,
            LABEL_KEY: self.key,
        }
