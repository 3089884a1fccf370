"""Deploy one TANGO project: validate -> build -> push -> deploy -> wait_ready.

Triggered by the TANGO REST API (``/start``) or from the UI with the params form.
"""

from airflow.sdk import DAG, Param

from cloud_deploy_provider.identity import IDENTIFIER_PATTERN
from cloud_deploy_provider.operators.cloud_deploy import (
    CloudDeployBuildOperator,
    CloudDeployPushOperator,
    CloudDeployTargetOperator,
    CloudDeployValidateOperator,
    CloudDeployWaitReadyOperator,
)

project = {"user_id": "{{ params.user_id }}", "project_id": "{{ params.project_id }}"}

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
    validate = CloudDeployValidateOperator(task_id="validate", **project)
    build = CloudDeployBuildOperator(task_id="build", validated=validate.output, **project)
    push = CloudDeployPushOperator(task_id="push", validated=validate.output, built=build.output, **project)
    deploy = CloudDeployTargetOperator(task_id="deploy", validated=validate.output, image=push.output, **project)
    wait_ready = CloudDeployWaitReadyOperator(task_id="wait_ready", validated=validate.output, **project)
    validate >> build >> push >> deploy >> wait_ready
