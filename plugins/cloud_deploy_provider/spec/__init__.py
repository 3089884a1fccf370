"""Models and a safe loader for TANGO's ``deployment.yaml``.

The models accept TANGO's published samples unchanged, while every value that later reaches a Dockerfile,
a command line, a file path or a resource name is held to a strict grammar. Every problem is reported at
once, as ``dotted.path: message``, in a :class:`SpecError`. By concern:

- ``grammar``: the patterns, value checks and annotated types (connection models use them too);
- ``sections``: the per-target sections of ``deploy``;
- ``document``: the document itself (build, deploy, optional files, schedule);
- ``loader``: the safe YAML reader, the wording of validation errors, the project files a spec names;
- ``errors``: :class:`SpecError` and the descriptions of a bad value.

Core layer: no airflow or docker imports.
"""

from cloud_deploy_provider.spec.document import (
    KNOWN_DEPLOY_TYPES, Accelerator, Build, Components, CustomPackages, Deploy, DeploymentSpec, Job, Network,
    OptionalFiles, Readiness, Resources, Schedule,
)
from cloud_deploy_provider.spec.errors import SpecError
from cloud_deploy_provider.spec.loader import (
    MAX_SPEC_BYTES, check_project_files, load_spec, parse_spec_text, validate_spec_data,
)
from cloud_deploy_provider.spec.sections import (
    AwsVpc, Batch, CloudRun, Ecs, K8s, K8sContainer, K8sIngress, K8sMount, K8sPort, K8sVolume, ModelService, SageMaker,
    SageMakerAsync,
)

__all__ = [
    "KNOWN_DEPLOY_TYPES",
    "MAX_SPEC_BYTES",
    "Accelerator",
    "AwsVpc",
    "Batch",
    "Build",
    "CloudRun",
    "Components",
    "CustomPackages",
    "Deploy",
    "DeploymentSpec",
    "Ecs",
    "K8s",
    "K8sContainer",
    "K8sIngress",
    "K8sMount",
    "K8sPort",
    "K8sVolume",
    "Job",
    "Schedule",
    "ModelService",
    "Network",
    "OptionalFiles",
    "Readiness",
    "Resources",
    "SageMaker",
    "SageMakerAsync",
    "SpecError",
    "check_project_files",
    "load_spec",
    "parse_spec_text",
    "validate_spec_data",
]
