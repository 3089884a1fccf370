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
    # Each project has at most one run (the REST API's run ids see to it); how many deploy at once is
    # bounded by the executor's parallelism (scripts/stack.sh), not here: these only keep the DAG's
    # own caps above it, so 20 projects started together all run (benchmarks/concurrent_deploys.py).
    max_active_runs=64,
    max_active_tasks=64,
    tags=["cloud-deploy"],
    params={
        "user_id": Param(type="string", pattern=IDENTIFIER_PATTERN, title="User id"),
        "project_id": Param(type="string", pattern=IDENTIFIER_PATTERN, title="Project id"),
    },
) as dag:
    deploy_pipeline("{{ params.user_id }}", "{{ params.project_id }}")
