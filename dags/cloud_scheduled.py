"""Scheduled redeploys and batch jobs of every TANGO project whose deployment.yaml has a ``schedule``.

The DAGs are generated (see :mod:`cloud_deploy_provider.scheduled`): ``cloud_redeploy__<user>__<project>``
and ``cloud_job__<user>__<project>__<job>``. (The words airflow and dag below keep the
dag-processor's safe-mode heuristic from skipping this file.)
"""

from cloud_deploy_provider.scheduled import build_dags
from cloud_deploy_provider.workspace import shared_root

build_dags(shared_root())  # each DAG registers itself (with DAG(...) blocks)
