"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point."""


def get_provider_info():
    return {
        "package-name": "cloud-deploy-provider",
        "name": "Cloud Deploy",
        "description": "Builds ML inference services into images and deploys them (TANGO cloud deploy).",
        "integrations": [
            {
                "integration-name": "Cloud Deploy",
                "external-doc-url": "https://github.com/ML-TANGO/TANGO",
                "tags": ["software"],
            }
        ],
        "operators": [
            {"integration-name": "Cloud Deploy", "python-modules": ["cloud_deploy_provider.operators.cloud_deploy"]}
        ],
        "hooks": [
            {
                "integration-name": "Cloud Deploy",
                "python-modules": [
                    "cloud_deploy_provider.clients.docker_engine",
                    "cloud_deploy_provider.clients.aws",
                    "cloud_deploy_provider.clients.gcp",
                    "cloud_deploy_provider.hooks.backendai",
                ],
            }
        ],
        "connection-types": [
            {"hook-class-name": "cloud_deploy_provider.hooks.backendai.BackendAIHook", "connection-type": "backendai"}
        ],
        "plugins": [{"name": "cloud_deploy", "plugin-class": "cloud_deploy_provider.plugin.CloudDeployPlugin"}],
    }
