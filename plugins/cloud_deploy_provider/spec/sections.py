"""The per-target sections of ``deploy``: ``k8s`` (kubernetes), ``model_service`` (compute-session), ``ecs``,
``sagemaker``, ``batch`` (AWS) and ``cloudrun``. Each belongs to one target (``targets.Registered.section``)."""

from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, model_validator

from cloud_deploy_provider.spec.errors import _did_you_mean, _fail
from cloud_deploy_provider.spec.grammar import (
    MAX_HTTP_PATH, _HTTP_PATH, _SAGEMAKER_INSTANCE_TYPE, _TARGET_GROUP_ARN, AbsolutePath, Arg, ArgList,
    AwsResourceName, DnsName, EnabledDisabled, EnvName, EnvValue, GcpProjectId, GcpRegion, GcpServiceAccount,
    IamRoleArn, K8sName, K8sPortName, K8sQuantity, ModelName, Port, RelativePath, S3Bucket, S3Uri, SecurityGroupId,
    SubnetId,
    _SpecModel, _grammar, _host, _image_reference, _one_of, _ranged,
)


class K8sPort(_SpecModel):
    port: Port
    name: K8sPortName | None = None
    node_port: Annotated[int, _ranged(integer=True, low=30000, high=32767)] | None = None


class K8sMount(_SpecModel):
    """A volume of ``k8s.volumes`` (or ``nfs``, TANGO's share) mounted at ``path`` in one container."""

    name: K8sName
    path: AbsolutePath
    read_only: bool = False


class K8sContainer(_SpecModel):
    """One container of the pod (CON_NAME/CON_CMD/CON_ARG/CON_PORT/CON_GPU/CON_VOL of TANGO's GPU-server deployer)."""

    name: K8sName
    image: Annotated[str, BeforeValidator(_image_reference)] | None = None
    command: ArgList | None = None
    args: list[Arg] = []
    ports: list[K8sPort] = []
    gpu: Annotated[int, _ranged(integer=True, low=0, high=64)] | None = None
    volumes: list[K8sMount] = []
    env: dict[EnvName, EnvValue] = {}


class K8sVolume(_SpecModel):
    """``nas``: a PersistentVolumeClaim of ``size``, created when absent; ``host``: the node's ``host_path``."""

    name: K8sName
    type: Annotated[str, _one_of(("nas", "host"), "volume type")] = "nas"
    size: K8sQuantity | None = None
    storage_class: K8sName | None = None
    host_path: AbsolutePath | None = None
    mount: AbsolutePath | None = None
    disposable: bool = False

    @model_validator(mode="after")
    def _complete(self) -> "K8sVolume":
        if self.type == "nas" and not self.size:
            _fail(f"volume {self.name!r}: a nas volume needs a size such as 100Gi")
        if self.type == "host" and not self.host_path:
            _fail(f"volume {self.name!r}: a host volume needs host_path")
        return self


class K8sIngress(_SpecModel):
    host: DnsName
    path: Annotated[str, _grammar(_HTTP_PATH, "an HTTP path such as /", max_len=MAX_HTTP_PATH)] = "/"
    port: Port | None = None
    class_name: K8sName | None = None


class K8s(_SpecModel):
    """``deploy.k8s``: TANGO's NFS share plus the Kubernetes target's namespace, volumes, containers and ingress."""

    nfsip: Annotated[str, BeforeValidator(_host)] | None = None
    nfspath: AbsolutePath | None = None
    nfs_mount: AbsolutePath = "/models"
    namespace: K8sName | None = None
    service_type: Annotated[str, _one_of(("clusterip", "nodeport"), "service type")] | None = None
    volumes: list[K8sVolume] = []
    containers: list[K8sContainer] = []
    ingress: K8sIngress | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "K8s":
        if bool(self.nfsip) != bool(self.nfspath):
            _fail("nfsip and nfspath go together (the NFS server and the exported path)")
        for what, names in (("volume", [v.name for v in self.volumes]), ("container", [c.name for c in self.containers])):
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                _fail(f"{what} names must be unique: {', '.join(repeated)}")
        known = {v.name for v in self.volumes} | ({"nfs"} if self.nfsip else set())
        for container in self.containers:
            for mount in container.volumes:
                if mount.name not in known:
                    hint = _did_you_mean(mount.name, known)
                    _fail(f"container {container.name!r} mounts {mount.name!r}, which is not in k8s.volumes"
                          f"{' (nfs needs nfsip and nfspath)' if mount.name == 'nfs' else ''}{'; ' + hint if hint else ''}")
        node_ports = [p.node_port for c in self.containers for p in c.ports if p.node_port]
        if len(node_ports) != len(set(node_ports)):
            _fail("node_port values must be unique")
        return self


RUNTIME_VARIANTS = ("custom", "vllm", "nim", "cmd")


class ModelService(_SpecModel):
    """A Backend.AI model service (``compute-session``).

    ``model`` names an existing model folder on the cluster (it must hold its own model
    definition for the ``custom`` variant); without it the target creates a folder per service
    with a model definition written from ``deploy``.
    """

    model: ModelName | None = None
    scaling_group: ModelName | None = None
    runtime_variant: Annotated[str, _one_of(RUNTIME_VARIANTS, "runtime variant")] = "custom"
    model_definition_path: RelativePath | None = None
    mount_destination: AbsolutePath = "/models"
    open_to_public: bool = False
    cluster_size: Annotated[int, _ranged(integer=True, low=1, high=64)] = 1
    cluster_mode: Annotated[str, _one_of(("single-node", "multi-node"), "cluster mode")] = "single-node"


class AwsVpc(_SpecModel):
    """TANGO's ``deploy.awsvpc``: where ECS tasks get their network interface."""

    subnets: list[SubnetId] = []
    security_groups: list[SecurityGroupId] = []
    assign_publicip: EnabledDisabled | None = None


class Ecs(_SpecModel):
    cluster: AwsResourceName | None = None
    launch_type: Annotated[str, _one_of(("fargate", "ec2"), "launch type"), AfterValidator(str.upper)] | None = None
    execution_role_arn: IamRoleArn | None = None
    task_role_arn: IamRoleArn | None = None
    target_group_arn: Annotated[
        str, _grammar(_TARGET_GROUP_ARN, "an ELB target group ARN (arn:aws:elasticloadbalancing:...:targetgroup/...)")
    ] | None = None


class SageMakerAsync(_SpecModel):
    output_path: S3Uri
    failure_path: S3Uri | None = None
    max_concurrent_invocations_per_instance: Annotated[int, _ranged(integer=True, low=1, high=1000)] | None = None


class SageMaker(_SpecModel):
    """A SageMaker endpoint; ``model_data`` are project files packed into ``deploy.tar.gz``."""

    mode: Annotated[Literal["realtime", "async"], _one_of(("realtime", "async"), "SageMaker mode")] = "realtime"
    instance_type: Annotated[
        str, _grammar(_SAGEMAKER_INSTANCE_TYPE, "a SageMaker instance type such as ml.t2.xlarge")
    ] = "ml.t2.xlarge"
    instance_count: Annotated[int, _ranged(integer=True, low=1, high=100)] = 1
    execution_role_arn: IamRoleArn | None = None
    bucket: S3Bucket | None = None
    model_data: list[RelativePath] = []
    async_inference: SageMakerAsync | None = Field(
        default=None, validation_alias=AliasChoices("async", "async_inference"), serialization_alias="async"
    )

    @model_validator(mode="after")
    def _async_needs_output(self) -> "SageMaker":
        if self.mode == "async" and self.async_inference is None:
            _fail("mode async needs async.output_path (the S3 URI results are written to)")
        return self


class Batch(_SpecModel):
    job_queue: AwsResourceName | None = None
    timeout_seconds: Annotated[int, _ranged(integer=True, low=60, high=14 * 24 * 3600)] | None = None
    attempts: Annotated[int, _ranged(integer=True, low=1, high=10)] = 1


class CloudRun(_SpecModel):
    """A Cloud Run service; ``project_id`` and ``region`` mean TANGO's GCP_PROJECT_ID and GCP_REGION."""

    project_id: GcpProjectId | None = None
    region: GcpRegion | None = None
    allow_unauthenticated: bool = False
    min_instances: Annotated[int, _ranged(integer=True, low=0, high=1000)] = 0
    max_instances: Annotated[int, _ranged(integer=True, low=1, high=1000)] | None = None
    concurrency: Annotated[int, _ranged(integer=True, low=1, high=1000)] | None = None
    request_timeout_seconds: Annotated[int, _ranged(integer=True, low=1, high=3600)] | None = None
    service_account: GcpServiceAccount | None = None

    @model_validator(mode="after")
    def _instances_in_order(self) -> "CloudRun":
        if self.max_instances is not None and self.min_instances > self.max_instances:
            _fail(f"min_instances ({self.min_instances}) is above max_instances ({self.max_instances})")
        return self
