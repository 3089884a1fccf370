"""TANGO's .env variables stand in for the cloud connections only when Airflow has none; secrets are masked."""

from __future__ import annotations

import json
import uuid

import pytest

from cloud_deploy_provider.clients.aws import AwsSession, AwsSettingsError
from cloud_deploy_provider.hooks.backendai import BackendAIHook, BackendAISettingsError
from cloud_deploy_provider.clients.gcp import GcpSession, GcpSettingsError

CONNECTION_VARIABLES = (
    "AIRFLOW_CONN_BACKENDAI_DEFAULT", "AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
    "CLOUD_DEPLOY_BACKENDAI_CONN_ID", "CLOUD_DEPLOY_AWS_CONN_ID", "CLOUD_DEPLOY_GCP_CONN_ID",
)
TANGO_VARIABLES = (
    "CS_ENDPOINT", "CS_ACCESS_KEY", "CS_SECRET_KEY", "CS_DEFAULT_DOMAIN", "CS_DEFAULT_GROUP",
    "GCP_PROJECT_ID", "GCP_REGION", "GOOGLE_APPLICATION_CREDENTIALS",
    "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
)


@pytest.fixture(autouse=True)
def no_connections(monkeypatch):
    """Neither a connection nor TANGO's variables, whatever the session's environment holds."""
    for name in (*CONNECTION_VARIABLES, *TANGO_VARIABLES):
        monkeypatch.delenv(name, raising=False)


def secret(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"  # unique: Airflow's masker is per process and keeps what it was given


def logged(line: str) -> str:
    """``line`` as Airflow's task log writes it: through the SDK's masking processor."""
    from airflow.sdk.log import mask_logs

    return mask_logs(None, "info", {"event": line})["event"]


def tango_backendai(monkeypatch, **overrides) -> dict[str, str]:
    values = {"CS_ENDPOINT": "https://bai.example.com", "CS_ACCESS_KEY": "AKIATANGOENV0001",
              "CS_SECRET_KEY": secret("cs"), "CS_DEFAULT_DOMAIN": "tango", "CS_DEFAULT_GROUP": "team-a", **overrides}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def service_account_key(tmp_path, project: str = "tango-testbed"):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key = {"type": "service_account", "project_id": project, "private_key_id": uuid.uuid4().hex, "private_key": pem,
           "client_email": f"deployer@{project}.iam.gserviceaccount.com", "client_id": "1",
           "token_uri": "https://oauth2.googleapis.com/token"}
    path = tmp_path / "service-account-file.json"
    path.write_text(json.dumps(key))
    return path, key


# ------------------------------------------------------------------ Backend.AI: CS_*

def test_cs_variables_stand_in_for_a_missing_backendai_connection(monkeypatch):
    values = tango_backendai(monkeypatch)
    settings = BackendAIHook().settings
    assert (settings.endpoint, settings.access_key, settings.secret_key) == (
        "https://bai.example.com", values["CS_ACCESS_KEY"], values["CS_SECRET_KEY"])
    assert (settings.extra.domain, settings.extra.group) == ("tango", "team-a")


def test_a_backendai_connection_wins_over_the_cs_variables(monkeypatch):
    tango_backendai(monkeypatch)
    stored = {"conn_type": "backendai", "host": "https://stored.example.com", "login": "AKIASTORED",
              "password": secret("stored"), "extra": {"group": "stored-group"}}
    monkeypatch.setenv("AIRFLOW_CONN_BACKENDAI_DEFAULT", json.dumps(stored))
    settings = BackendAIHook().settings
    assert (settings.endpoint, settings.access_key, settings.secret_key) == (
        "https://stored.example.com", "AKIASTORED", stored["password"])
    assert (settings.extra.domain, settings.extra.group) == ("default", "stored-group"), "no CS_DEFAULT_* mixed in"


def test_the_cs_secret_key_is_masked_in_task_logs(monkeypatch):
    values = tango_backendai(monkeypatch)
    BackendAIHook().settings
    line = logged(f"signing with {values['CS_SECRET_KEY']} for {values['CS_ACCESS_KEY']}")
    assert values["CS_SECRET_KEY"] not in line and "signing with *** for" in line


def test_incomplete_cs_variables_say_which_are_missing(monkeypatch):
    monkeypatch.setenv("CS_ENDPOINT", "https://bai.example.com")
    with pytest.raises(BackendAISettingsError, match="CS_ENDPOINT set, CS_ACCESS_KEY, CS_SECRET_KEY missing"):
        BackendAIHook().settings


def test_without_connection_or_variables_the_error_names_both(monkeypatch):
    with pytest.raises(BackendAISettingsError, match="no Airflow connection 'backendai_default'.*CS_ENDPOINT"):
        BackendAIHook().settings
    with pytest.raises(GcpSettingsError, match="no Airflow connection 'google_cloud_default'.*GCP_PROJECT_ID"):
        GcpSession().project_id()


# ------------------------------------------------------------------ AWS: AWS_*

def test_aws_variables_stand_in_for_a_missing_aws_connection(monkeypatch):
    key = secret("aws")
    monkeypatch.setenv("AWS_REGION", "ap-northeast-2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATANGOENV0002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key)
    session = AwsSession()
    credentials = session._boto_session.get_credentials()
    assert session.region == "ap-northeast-2"
    assert (credentials.access_key, credentials.secret_key) == ("AKIATANGOENV0002", key)
    assert key not in logged(f"secret {key}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert AwsSession().client("sts").meta.endpoint_url == "http://127.0.0.1:9", "boto3's own endpoint variable"


def test_an_aws_connection_wins_over_the_aws_variables_and_keeps_its_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "ap-northeast-2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATANGOENV0003")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret("aws"))
    extra = {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9"}
    stored = {"conn_type": "aws", "login": "AKIASTORED0000000001", "password": secret("stored"), "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(stored))
    session = AwsSession()
    assert session.region == "eu-west-1"
    assert session._boto_session.get_credentials().access_key == "AKIASTORED0000000001"
    assert session.client("sts").meta.endpoint_url == "http://127.0.0.1:9"


def test_half_an_aws_key_pair_is_refused(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATANGOENV0004")
    with pytest.raises(AwsSettingsError, match="AWS_SECRET_ACCESS_KEY missing"):
        AwsSession().region


# ------------------------------------------------------------------ Google Cloud: GCP_*, GOOGLE_APPLICATION_CREDENTIALS

def test_gcp_variables_and_the_key_file_stand_in_for_a_missing_google_connection(monkeypatch, tmp_path):
    path, key = service_account_key(tmp_path)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("GCP_PROJECT_ID", "tango-other")
    monkeypatch.setenv("GCP_REGION", "asia-northeast3")
    session = GcpSession()
    assert session.credentials.service_account_email == key["client_email"]
    assert (session.project_id(), session.region()) == ("tango-other", "asia-northeast3")
    body = key["private_key"].splitlines()[1]
    assert logged(f"key {key['private_key']}") == "key ***"
    assert body not in logged(f"keyfile {json.dumps(key)}"), "also as JSON, newlines escaped"


def test_a_key_file_of_another_kind_is_handed_to_google_auth_by_path(monkeypatch, tmp_path):
    token = secret("refresh")
    path = tmp_path / "authorized-user.json"
    path.write_text(json.dumps({"type": "authorized_user", "client_id": "id", "client_secret": secret("client"),
                                "refresh_token": token}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("GCP_PROJECT_ID", "tango-testbed")
    session = GcpSession()
    assert session.credentials.refresh_token == token and session.project_id() == "tango-testbed"
    assert logged(f"token {token}") == "token ***"


def test_a_google_connection_wins_over_the_gcp_variables(monkeypatch, tmp_path):
    path, _ = service_account_key(tmp_path)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("GCP_PROJECT_ID", "tango-other")
    monkeypatch.setenv("GCP_REGION", "us-central1")
    stored = {"conn_type": "google_cloud_platform",
              "extra": {"project": "tango-testbed", "cloud_deploy": {"region": "asia-northeast3"}}}
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(stored))
    session = GcpSession()
    assert (session.project_id(), session.region()) == ("tango-testbed", "asia-northeast3")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read .*missing.json: No such file or directory"),
        ("", "cannot read .*: Is a directory"),
        ("{not json", ".*missing.json is not JSON \\(Expecting property name enclosed in double quotes, line 1\\)"),
        ('["a", "list"]', ".*missing.json is not a Google credentials file"),
        (b"\xff\xfe\x00binary", "cannot read .*: not a text file"),
    ],
)
def test_an_unusable_key_file_fails_with_what_is_wrong(monkeypatch, tmp_path, content, message):
    path = tmp_path / "missing.json"
    if content == "":
        path = tmp_path
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    with pytest.raises(GcpSettingsError, match=f"GOOGLE_APPLICATION_CREDENTIALS: {message}"):
        GcpSession().credentials


def test_a_stored_connection_in_the_metadata_db_wins(airflow_db, monkeypatch):
    """As the api-server and scheduler look connections up (tasks reach the same rows through the execution API)."""
    from airflow.models import Connection
    from airflow.utils.session import create_session

    conn_id = f"tango_env_{uuid.uuid4().hex[:8]}"
    stored = Connection(conn_id=conn_id, conn_type="backendai", host="https://db.example.com", login="AKIADB",
                        password=secret("db"))
    with create_session() as session:
        session.add(stored)
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    monkeypatch.setenv("CLOUD_DEPLOY_BACKENDAI_CONN_ID", conn_id)
    tango_backendai(monkeypatch)
    try:
        assert (BackendAIHook().settings.endpoint, BackendAIHook().settings.access_key) == ("https://db.example.com",
                                                                                          "AKIADB")
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()
