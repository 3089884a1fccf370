"""Local servers speaking the wire protocols of services the tests cannot reach, driven by the real client
libraries: Kubernetes' API server (``kubernetes``), Google Cloud Run and Artifact Registry (``gcp``), Backend.AI's
manager (``backendai``), TANGO's KT Cloud agent (``ktc_agent``), a proxy in front of moto (``aws_proxy``) and a
PyPI index that can be held back (``package_index``); ``common`` is what they share. AWS itself is moto's server.

Their fixtures, with the Docker engine's, the registry's and Airflow's, are the pytest plugin ``fixtures``.
"""
