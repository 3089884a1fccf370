"""Stop one TANGO project: delete everything its deployment created (idempotent).

Triggered by the TANGO REST API (``/stop``), which passes the last deployed spec, or from the UI.
"""

from airflow.sdk import DAG, Param

from cloud_deploy_provider.identity import IDENTIFIER_PATTERN
from cloud_deploy_provider.operators.cloud_deploy import CloudUndeployOperator, retry_arguments

with DAG(
    dag_id="cloud_undeploy",
    description="Remove every resource a TANGO project's deployment created",
    schedule=None,
    catchup=False,
    is_paused_upon_creation=False,
    tags=["cloud-deploy"],
    params={
        "user_id": Param(type="string", pattern=IDENTIFIER_PATTERN, title="User id"),
        "project_id": Param(type="string", pattern=IDENTIFIER_PATTERN, title="Project id"),
        "spec": Param(None, type=["null", "object"], title="Last deployed spec (optional)",
                      description="Defaults to the project's current deployment.yaml"),
    },
) as dag:
    CloudUndeployOperator(task_id="stop", user_id="{{ params.user_id }}", project_id="{{ params.project_id }}",
                          **retry_arguments())
