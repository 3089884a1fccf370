# Airflow 3.3 image with the Cloud Deploy provider (and the Celery provider for CeleryExecutor).
# AIRFLOW_IMAGE: the base, the official image by default (a mirror's copy where Docker Hub is not reachable).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}
USER root
RUN mkdir -p /opt/cloud-deploy/src /opt/cloud-deploy/dags /shared \
 && chown -R airflow:0 /opt/cloud-deploy /shared
USER airflow
WORKDIR /opt/cloud-deploy/src
COPY --chown=airflow:0 pyproject.toml README* ./
COPY --chown=airflow:0 plugins ./plugins
# pin Airflow to the base image's version so installing the provider never up- or downgrades it
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" apache-airflow-providers-celery . \
 && cloud-deploy --help >/dev/null
WORKDIR /opt/airflow
