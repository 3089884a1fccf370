"""Connections made into ready clients, on top of the providers' hooks: the Docker engine, AWS (one boto3
client per service), Google Cloud, the ``extra.cloud_deploy`` defaults, and TANGO's ``.env`` fallbacks.

None of these is an Airflow hook (those live in ``hooks/``); each reads its Airflow connection once.
"""
