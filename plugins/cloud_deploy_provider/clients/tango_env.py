"""TANGO's ``.env`` variables standing in for the cloud connections, when Airflow has none.

TANGO's cloud deploy module took its credentials from environment variables that its compose file
loads from ``.env`` (``env_file: .env``); here they come from Airflow connections. So that a TANGO
installation keeps working with its ``.env``, the variables stand in for the connection a hook uses
only when Airflow has no connection of that id (any secrets backend, or the metadata DB through the
execution API): a connection always wins, even when the variables are set. The stand-in is an
in-memory ``airflow.sdk.Connection`` with the type and fields a real one would have, so the hooks
read one shape either way; its secrets are registered with Airflow's log masker when it is built,
as a stored connection's are when it is read.

    CS_ENDPOINT, CS_ACCESS_KEY, CS_SECRET_KEY      backendai: host, login, password
    CS_DEFAULT_DOMAIN, CS_DEFAULT_GROUP            backendai: extra domain, group
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY       aws: login, password
    AWS_REGION                                     aws: extra region_name
    GOOGLE_APPLICATION_CREDENTIALS                 google_cloud_platform: extra keyfile_dict (the file's JSON)
    GCP_PROJECT_ID, GCP_REGION                     google_cloud_platform: extra project, cloud_deploy.region
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

CS_VARIABLES = ("CS_ENDPOINT", "CS_ACCESS_KEY", "CS_SECRET_KEY", "CS_DEFAULT_DOMAIN", "CS_DEFAULT_GROUP")
AWS_VARIABLES = ("AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
GCP_VARIABLES = ("GCP_PROJECT_ID", "GCP_REGION", "GOOGLE_APPLICATION_CREDENTIALS")
# Fields of a Google credentials file that are secrets (service account, authorized user, external account).
_GOOGLE_SECRET_FIELDS = ("private_key", "client_secret", "refresh_token")

StandIn = Callable[[str, type[Exception]], Any]


def stored_connection(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id``, looked up as hooks do; None when Airflow has none."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def connection_or_env(conn_id: str, stand_in: StandIn, error: type[Exception]) -> Any | None:
    """The Airflow connection ``conn_id`` if there is one, else ``stand_in``'s from TANGO's variables (or None)."""
    connection = stored_connection(conn_id)
    return connection if connection is not None else stand_in(conn_id, error)


def backendai_from_env(conn_id: str, error: type[Exception]) -> Any | None:
    """A ``backendai`` connection from ``CS_*``; None when none of them is set."""
    values = _variables(CS_VARIABLES)
    if not values:
        return None
    _require(values, ("CS_ENDPOINT", "CS_ACCESS_KEY", "CS_SECRET_KEY"), conn_id, error)
    extra = {key: values[name] for key, name in (("domain", "CS_DEFAULT_DOMAIN"), ("group", "CS_DEFAULT_GROUP"))
             if name in values}
    return _connection(conn_id, "backendai", values, extra, host=values["CS_ENDPOINT"],
                       login=values["CS_ACCESS_KEY"], password=values["CS_SECRET_KEY"])


def aws_from_env(conn_id: str, error: type[Exception]) -> Any | None:
    """An ``aws`` connection from ``AWS_REGION`` and the key pair; None when none of them is set.

    boto3 reads the key pair from the environment by itself as well; putting it in the connection
    makes the choice ours (the connection's fields, else these variables), not the credential chain's.
    ``AWS_SESSION_TOKEN`` goes with the pair when set, since a temporary key is useless without it.
    """
    values = _variables(AWS_VARIABLES)
    if not values:
        return None
    if ("AWS_ACCESS_KEY_ID" in values) != ("AWS_SECRET_ACCESS_KEY" in values):
        _require(values, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), conn_id, error)
    extra: dict[str, Any] = {"region_name": values["AWS_REGION"]} if "AWS_REGION" in values else {}
    token = os.environ.get("AWS_SESSION_TOKEN", "").strip()
    if token and "AWS_ACCESS_KEY_ID" in values:
        _mask(token)
        extra["aws_session_token"] = token
    return _connection(conn_id, "aws", values, extra, login=values.get("AWS_ACCESS_KEY_ID"),
                       password=values.get("AWS_SECRET_ACCESS_KEY"))


def gcp_from_env(conn_id: str, error: type[Exception]) -> Any | None:
    """A ``google_cloud_platform`` connection from ``GCP_*`` and the key file; None when none of them is set."""
    values = _variables(GCP_VARIABLES)
    if not values:
        return None
    extra: dict[str, Any] = {}
    if "GOOGLE_APPLICATION_CREDENTIALS" in values:
        extra.update(_google_key(values["GOOGLE_APPLICATION_CREDENTIALS"], error))
    if "GCP_PROJECT_ID" in values:
        extra["project"] = values["GCP_PROJECT_ID"]
    if "GCP_REGION" in values:
        extra["cloud_deploy"] = {"region": values["GCP_REGION"]}
    return _connection(conn_id, "google_cloud_platform", values, extra)


def _google_key(path: str, error: type[Exception]) -> dict[str, str]:
    """The key file as the google provider's extra: its JSON as ``keyfile_dict`` for a service account key,
    else its path as ``key_path`` (google-auth reads authorized-user and external-account files itself)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as problem:
        reason = getattr(problem, "strerror", None) or "not a text file"
        raise error(f"GOOGLE_APPLICATION_CREDENTIALS: cannot read {path}: {reason}") from None
    try:
        key = json.loads(text)
    except json.JSONDecodeError as problem:  # its message quotes no content, only where it failed
        raise error(f"GOOGLE_APPLICATION_CREDENTIALS: {path} is not JSON ({problem.msg}, line {problem.lineno}); "
                    "it should be a service account key file") from None
    if not isinstance(key, dict) or not isinstance(key.get("type"), str):
        raise error(f"GOOGLE_APPLICATION_CREDENTIALS: {path} is not a Google credentials file "
                    "(a JSON object with a 'type', such as a service account key)")
    for field in _GOOGLE_SECRET_FIELDS:
        _mask(key.get(field))
    if key["type"] == "service_account":
        return {"keyfile_dict": json.dumps(key)}
    return {"key_path": path}


def _variables(names: tuple[str, ...]) -> dict[str, str]:
    """Those of ``names`` that are set to more than blanks, stripped (an empty ``.env`` line sets nothing)."""
    return {name: value.strip() for name in names if (value := os.environ.get(name, "")).strip()}


def _require(values: dict[str, str], names: tuple[str, ...], conn_id: str, error: type[Exception]) -> None:
    missing = [name for name in names if name not in values]
    if missing:
        raise error(f"there is no Airflow connection {conn_id!r}, and TANGO's variables stand in for it only "
                    f"complete: {', '.join(sorted(values))} set, {', '.join(missing)} missing")


def _connection(conn_id: str, conn_type: str, values: dict[str, str], extra: dict[str, Any], **fields: Any) -> Any:
    from airflow.sdk import Connection

    _mask(fields.get("password"))
    return Connection(conn_id=conn_id, conn_type=conn_type, description=f"from TANGO's {', '.join(sorted(values))}",
                      extra=json.dumps(extra), **fields)


def _mask(secret: Any) -> None:
    """Register ``secret`` with Airflow's masker (this process's, and the task supervisor's when in a task)."""
    if isinstance(secret, str) and secret:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
