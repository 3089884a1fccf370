"""The ``deployment.yaml`` document: build, deploy (with the per-target sections), optional files and schedule,
and the checks that span sections."""

import typing
from typing import Annotated, Any, Literal

from packaging.requirements import Requirement
from pydantic import AfterValidator, AliasChoices, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator

from cloud_deploy_provider.accelerators import TYPE_ALIASES, AcceleratorError, AcceleratorRequest, request_of
from cloud_deploy_provider.jobs import JOB_RUNNERS, JOB_TARGETS
from cloud_deploy_provider.spec.errors import _described, _fail, _show
from cloud_deploy_provider.spec.grammar import (
    MAX_HTTP_PATH, _HTTP_PATH, _JOB_NAME, _NAME, _OS, AbsolutePath, AptPackage, ArgList, Command, Cron, EnvName,
    EnvValue, Lib, Name, Port, PositiveNumber, PypiPackage, RelativePath, VendorResourceKey, _SpecModel,
    _accelerator_fields, _agent_address, _architecture, _at_most_one_python_pin, _grammar, _image_reference,
    _ip_address, _note_legacy_form, _one_of, _python_pin_of, _ranged, _service_name,
)
from cloud_deploy_provider.spec.sections import AwsVpc, Batch, CloudRun, Ecs, K8s, ModelService, SageMaker
from cloud_deploy_provider.targets import TARGET_TYPES

KNOWN_DEPLOY_TYPES = TARGET_TYPES
AcceleratorType = Literal["cpu", "gpu", "npu", "tpu"]
AcceleratorVendor = Literal["nvidia", "amd", "rebellion", "google", "intel"]
ReadinessCheck = Literal["http", "tcp"]
ATP_WARNING = (
    "build.components.custom_packages.atp: read as 'apt' (TANGO's code generator misspells the key); "
    "rename it to 'apt'"
)


class Accelerator(_SpecModel):
    type: Annotated[AcceleratorType, _one_of(typing.get_args(AcceleratorType), "accelerator type")]
    vendor: (
        Annotated[AcceleratorVendor, _one_of(typing.get_args(AcceleratorVendor), "accelerator vendor")] | None
    ) = None
    model: Annotated[str, _grammar(_NAME, "an accelerator model such as a100", lower=True)] | None = None
    count: Annotated[int, _ranged(integer=True, low=0)] = 0
    shares: Annotated[float, _ranged(integer=False, above=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthand(cls, data: Any) -> Any:
        if isinstance(data, Accelerator):
            return data
        if isinstance(data, str):
            data = _accelerator_fields(data)
        elif isinstance(data, dict):
            data = dict(data)
        else:
            _fail(
                f"must be one of {', '.join(typing.get_args(AcceleratorType))}, a 'type:vendor:model:count' string "
                f"or a mapping, got {_described(data)}"
            )
        data = _read_type_alias(data)
        if "count" not in data:
            accelerator_type = data.get("type")
            is_cpu = isinstance(accelerator_type, str) and accelerator_type.lower() == "cpu"
            data["count"] = 0 if is_cpu else 1
        return data


def _read_type_alias(data: dict[str, Any]) -> dict[str, Any]:
    """``cuda`` (TANGO's code generator) as the type and vendor it stands for, ``gpu`` and ``nvidia``."""
    written = data.get("type")
    alias = TYPE_ALIASES.get(written.lower()) if isinstance(written, str) else None
    if alias is None:
        return data
    accelerator_type, vendor = alias
    given = data.get("vendor")
    if given is not None and (not isinstance(given, str) or given.lower() != vendor):
        _fail(f"{_show(written)} means a {vendor} {accelerator_type}; vendor {_show(given)} contradicts it")
    return {**data, "type": accelerator_type, "vendor": vendor}


class CustomPackages(_SpecModel):
    apt: list[AptPackage] = Field(default=[], validation_alias=AliasChoices("apt", "atp"))
    pypi: list[PypiPackage] = []

    @model_validator(mode="before")
    @classmethod
    def _note_misspelled_apt(cls, data: Any, info: ValidationInfo) -> Any:
        """``atp`` fills ``apt`` (the alias above); giving both is the usual 'same setting' error."""
        if isinstance(data, dict) and "atp" in data and "apt" not in data:
            _note_legacy_form(info, ATP_WARNING)
        return data


class Components(_SpecModel):
    engine: Name | None = None
    libs: Annotated[list[Lib], AfterValidator(_at_most_one_python_pin)] = []
    custom_packages: CustomPackages = Field(default_factory=CustomPackages)

    @property
    def python_version(self) -> str | None:
        return next((pin for pin in map(_python_pin_of, self.libs) if pin), None)

    @property
    def pip_requirements(self) -> list[str]:
        wanted = [lib for lib in self.libs if _python_pin_of(lib) is None] + self.custom_packages.pypi
        normalised = (str(Requirement(requirement)) for requirement in wanted)
        return list(dict.fromkeys(normalised))


class Build(_SpecModel):
    architecture: Annotated[str, BeforeValidator(_architecture)] = "x86"
    accelerator: Accelerator = Field(default_factory=lambda: Accelerator(type="cpu"))
    os: Annotated[str, _grammar(_OS, "an OS name such as ubuntu20.04, debian12 or rhel8")] | None = None
    image_uri: Annotated[str, BeforeValidator(_image_reference)] | None = None
    components: Components = Field(default_factory=Components)


class Resources(_SpecModel):
    """cpu, memory (MB) and gpu, plus vendor keys such as ``atom-max.device``."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[VendorResourceKey, PositiveNumber] = Field(init=False)

    cpu: Annotated[float, _ranged(integer=False, above=0, high=512)] | None = None
    memory: Annotated[int, _ranged(integer=True, above=0)] | None = None
    gpu: Annotated[int, _ranged(integer=True, low=0)] | None = None
    shm_size: Annotated[int, _ranged(integer=True, low=1, high=1024 * 1024)] | None = None

    @property
    def extra(self) -> dict[str, int | float]:
        return dict(self.model_extra or {})


class Network(_SpecModel):
    service_host_ip: Annotated[str, BeforeValidator(_ip_address)] | None = None
    service_host_port: Port | None = None
    service_container_port: Port | None = None

    @property
    def container_port(self) -> int | None:
        return self.service_container_port or self.service_host_port


class Readiness(_SpecModel):
    check: Annotated[ReadinessCheck, _one_of(typing.get_args(ReadinessCheck), "readiness check")] = "http"
    path: Annotated[
        str,
        _grammar(_HTTP_PATH, "an HTTP path such as /health (letters, digits and ._~/?=&%+-)", max_len=MAX_HTTP_PATH),
    ] = "/"
    timeout_seconds: Annotated[int, _ranged(integer=True, low=1, high=3600)] = 180
    interval_seconds: Annotated[float, _ranged(integer=False, low=0.1, high=60)] = 1.0


class Deploy(_SpecModel):
    type: Annotated[str, _one_of(KNOWN_DEPLOY_TYPES, "deploy type")]
    service_name: Annotated[str, BeforeValidator(_service_name)] = Field(
        validation_alias=AliasChoices("service_name", "name")
    )
    work_dir: AbsolutePath = "/workspace"
    pre_exec: list[Command] = []
    entrypoint: ArgList | None = None
    env: dict[EnvName, EnvValue] = {}
    resources: Resources = Field(default_factory=Resources)
    network: Network | None = None
    k8s: K8s | None = None
    model_service: ModelService | None = None
    replicas: Annotated[int, _ranged(integer=True, low=1, high=100)] = 1
    readiness: Readiness = Field(default_factory=Readiness)
    awsvpc: AwsVpc | None = None
    ecs: Ecs | None = None
    sagemaker: SageMaker | None = None
    batch: Batch | None = None
    cloudrun: CloudRun | None = None
    address: Annotated[str, BeforeValidator(_agent_address)] | None = None


class JobResources(_SpecModel):
    cpu: Annotated[float, _ranged(integer=False, above=0, high=512)] | None = None
    memory: Annotated[int, _ranged(integer=True, above=0)] | None = None
    gpu: Annotated[int, _ranged(integer=True, low=0, high=64)] = 0
    gpu_type: Annotated[str, _grammar(_NAME, "a GPU model such as t4 or a100", lower=True)] | None = None


class Job(_SpecModel):
    """A batch job run to completion on a schedule (the MLOps tutorial's per-job DAG)."""

    name: Annotated[str, _grammar(_JOB_NAME, "a job name (lowercase letters, digits and '-', up to 40)")]
    cron: Cron
    command: ArgList | None = None
    image: Annotated[str, BeforeValidator(_image_reference)] | None = None
    env: dict[EnvName, EnvValue] = {}
    resources: JobResources = Field(default_factory=JobResources)
    retries: Annotated[int, _ranged(integer=True, low=0, high=10)] = 0
    timeout_seconds: Annotated[int, _ranged(integer=True, low=1, high=7 * 24 * 3600)] = 3600
    target: Annotated[str, _one_of(JOB_TARGETS, "job target")] = "docker"


class Schedule(_SpecModel):
    redeploy: Cron | None = None
    jobs: list[Job] = []

    @model_validator(mode="after")
    def _unique_jobs(self) -> "Schedule":
        names = [job.name for job in self.jobs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            _fail(f"job names must be unique: {', '.join(repeated)}")
        return self


class OptionalFiles(_SpecModel):
    nn_file: RelativePath | None = None
    weight_file: RelativePath | None = None
    annotation_file: RelativePath | None = None


class DeploymentSpec(_SpecModel):
    build: Build
    deploy: Deploy
    optional: OptionalFiles | None = None
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _jobs_can_pull_the_project_image(self) -> "DeploymentSpec":
        for index, job in enumerate(self.schedule.jobs if self.schedule else []):
            needs = JOB_RUNNERS[job.target].own_image_needs
            if needs and job.image is None and self.deploy.type != needs[0]:
                _fail(f"schedule.jobs[{index}]: an {job.target} job runs the project's own image only when deploy.type "
                      f"is {needs[0]} ({needs[1]}); otherwise give the job an image")
        return self

    @model_validator(mode="after")
    def _accelerator_consistent(self) -> "DeploymentSpec":
        try:
            self.accelerator_request
        except AcceleratorError as error:
            _fail(str(error))
        return self

    @property
    def accelerator_request(self) -> AcceleratorRequest:
        """``build.accelerator`` merged with ``deploy.resources.gpu`` and slot keys such as ``atom-max.device``."""
        accelerator, resources = self.build.accelerator, self.deploy.resources
        return request_of(**accelerator.model_dump(), gpu=resources.gpu, slots=resources.extra)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=False, exclude_none=True)
