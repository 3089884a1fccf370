"""Scheduled redeploys and batch jobs of every TANGO project whose deployment.yaml has a ``schedule``.

The DAGs are generated (see :mod:`cloud_deploy_provider.scheduled`): ``cloud_redeploy__<user>__<project>``
and ``cloud_job__<user>__<project>__<job>``.
"""

from airflow.sdk import get_parsing_context

from cloud_deploy_provider.scheduled import build_dags
from cloud_deploy_provider.workspace import shared_root

# A worker running one task parses this file for that DAG only; the dag-processor builds them all.
build_dags(shared_root(), only=get_parsing_context().dag_id)  # each DAG registers itself
