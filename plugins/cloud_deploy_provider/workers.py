"""The host name a task reports to Airflow (``[core] hostname_callable``).

Several Celery workers on one machine share its host name, so their task instances could not be told
apart; in the scale-out shape each worker's environment names it (``CLOUD_DEPLOY_WORKER_HOSTNAME``), and
every task it runs reports that name. Without the variable, the machine's name, as Airflow's default.
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("CLOUD_DEPLOY_WORKER_HOSTNAME") or socket.getfqdn()
