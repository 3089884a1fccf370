"""Deploy one TANGO project: build (validate, build, push) -> deploy (deploy, wait until ready).

Triggered by the TANGO REST API (``/start``) or from the UI with the params form.
"""

from airflow.sdk import DAG, Param

from cloud_deploy_provider.identity import IDENTIFIER_PATTERN
from cloud_deploy_provider.operators.cloud_deploy import deploy_pipeline

with DAG(
    dag_id="cloud_deploy",
    description="Build a TANGO project's image and deploy it to the target in its deployment.yaml",
    schedule=None,
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=16,
    tags=["cloud-deploy"],
    params={
        "user_id": Param(type="string", pattern=IDENTIFIER_PATTERN, title="User id"),
        "project_id": Param(type="string", pattern=IDENTIFIER_PATTERN, title="Project id"),
    },
) as dag:
    deploy_pipeline("{{ params.user_id }}", "{{ params.project_id }}")
