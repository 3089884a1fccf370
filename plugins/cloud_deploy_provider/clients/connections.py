"""What the cloud connections share: the connection id from the environment, endpoint overrides,
and the ``extra.cloud_deploy`` defaults validated with errors that name the connection and key."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ValidationError

_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_ENDPOINT = re.compile(r"^(?:https?://)?[A-Za-z0-9.-]+(?::[0-9]{1,5})?$")
Defaults = TypeVar("Defaults", bound=BaseModel)


def _endpoint(value: Any) -> str:
    if not isinstance(value, str) or not _ENDPOINT.match(value):
        raise ValueError("must be host[:port] or http(s)://host[:port]")
    return value


Endpoint = Annotated[str, BeforeValidator(_endpoint)]


def conn_id_from_env(variable: str, default: str, error: type[Exception]) -> str:
    value = os.environ.get(variable, "").strip() or default
    if not _CONN_ID.match(value):
        raise error(f"{variable}: {value!r} is not a connection id")
    return value


def cloud_deploy_defaults(model: type[Defaults], extra: dict[str, Any], conn_id: str, error: type[Exception]) -> Defaults:
    try:
        return model.model_validate(extra.get("cloud_deploy") or {})
    except ValidationError as invalid:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in invalid.errors())
        raise error(f"connection {conn_id!r} extra.cloud_deploy: {problems}") from None
