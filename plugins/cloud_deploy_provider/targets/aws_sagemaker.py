"""The ``aws-sagemaker`` target: a SageMaker endpoint (real-time or asynchronous) running the image by digest.

``deploy.sagemaker.model_data`` (project files and folders) is packed into a deterministic
``deploy.tar.gz``, stored in S3 under a key made from its sha256 and mounted by SageMaker at
``/opt/ml/model``. Each distinct configuration gets its own model and endpoint config, named
with a hash of their inputs; a deploy whose inputs are unchanged creates nothing, a changed one
updates the endpoint in place. Models and configs the endpoint no longer uses are deleted by
the next deploy, once the endpoint is back in service, and all of them by stop.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, ClassVar

from botocore.exceptions import ClientError

from cloud_deploy_provider.accelerators import sagemaker_check
from cloud_deploy_provider.clients import poll_until
from cloud_deploy_provider.identity import LABEL_KEY, ProjectRef
from cloud_deploy_provider.spec import DeploymentSpec, SageMaker
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus
from cloud_deploy_provider.targets._aws import AwsTarget, AwsTargetError, tag_list
from cloud_deploy_provider.targets.base import CONFIG_LABEL, config_hash
from cloud_deploy_provider.workspace import project_dir

ARCHIVE_NAME = "deploy.tar.gz"
S3_PREFIX = "cloud-deploy"
VARIANT = "AllTraffic"
SAGEMAKER_PORT = 8080
HASH_CHARS = 12
TAR_MTIME = 946684800  # 2000-01-01: a fixed time, so the same files always give the same archive
# Creating or updating an endpoint routinely takes 5-15 minutes, longer than the usual readiness timeout.
READY_SECONDS = 1800
SETTLE_SECONDS = 900
# SageMaker's limits, as TANGO's SageMaker / AWS Batch guide quotes them: what a caller can send and how long
# inference may take.
LIMITS = {
    "realtime": {"max_payload": "6 MB", "max_inference_time": "60 s"},
    "async": {"max_payload": "6 MB (1 GB through an upload URL)", "max_inference_time": "15 min"},
}
STARTING = {"Creating", "Updating", "SystemUpdating", "RollingBack"}


# ---------------------------------------------------------------------- deploy.tar.gz


def model_files(root: Path, paths: list[str]) -> list[tuple[str, Path]]:
    """(name in the archive, file or folder) for every entry, sorted; rejects what SageMaker must not get."""
    root = root.resolve()
    entries: dict[str, Path] = {}
    for relative in paths:
        top = _checked_path(root, relative)
        entries[top.relative_to(root).as_posix()] = top
        if top.is_dir():
            _walk(root, top, entries)
    return sorted(entries.items())


def _reject(relative: str, problem: str) -> AwsTargetError:
    return AwsTargetError(f"aws-sagemaker: deploy.sagemaker.model_data: {relative!r} {problem}")


def _checked_path(root: Path, relative: str) -> Path:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise _reject(relative, "is outside the project folder (no absolute paths, no '..')")
    if not path.parts:
        raise _reject(relative, "must name a file or folder inside the project folder")
    current = root
    for part in path.parts:
        current = current / part
        shown = current.relative_to(root).as_posix()
        if part.startswith("."):
            raise _reject(shown, "is hidden (deploy.tar.gz takes no hidden files or folders)")
        if current.is_symlink():
            raise _reject(shown, "is a symbolic link (deploy.tar.gz takes no symlinks)")
        if not current.exists():
            raise _reject(shown, "does not exist in the project folder")
    if not current.resolve().is_relative_to(root):
        raise _reject(relative, "resolves outside the project folder")
    if not (current.is_file() or current.is_dir()):
        raise _reject(relative, "is neither a regular file nor a folder")
    return current


def _walk(root: Path, folder: Path, entries: dict[str, Path]) -> None:
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        shown = path.relative_to(root).as_posix()
        if entry.name.startswith("."):
            raise _reject(shown, "is hidden (deploy.tar.gz takes no hidden files or folders)")
        if entry.is_symlink():
            raise _reject(shown, "is a symbolic link (deploy.tar.gz takes no symlinks)")
        if entry.is_dir():
            entries[shown] = path
            _walk(root, path, entries)
        elif entry.is_file():
            entries[shown] = path
        else:
            raise _reject(shown, "is neither a regular file nor a folder")


def write_archive(entries: list[tuple[str, Path]], out: IO[bytes]) -> None:
    """A gzip'd tar with fixed times, owners and modes: the same files always give the same bytes."""
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as archive,
    ):
        for name, path in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = TAR_MTIME, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
                continue
            found = path.stat()
            info.size, info.mode = found.st_size, 0o755 if found.st_mode & stat.S_IXUSR else 0o644
            with path.open("rb") as handle:
                archive.addfile(info, handle)


def pack_model_data(root: Path, paths: list[str], out: IO[bytes]) -> str:
    """Write deploy.tar.gz to ``out`` (seekable); returns its sha256."""
    write_archive(model_files(root, paths), out)
    out.flush()
    out.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: out.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class EndpointPlan:
    """What describe and deploy both need: the requests, minus the names that depend on their hash."""

    model: dict[str, Any]
    config: dict[str, Any]

    @property
    def config_hash(self) -> str:
        return config_hash([self.model, self.config], SageMakerTarget.config_hash_length)


class SageMakerTarget(AwsTarget):
    type: ClassVar[str] = "aws-sagemaker"
    stop_needs: ClassVar[str] = "the endpoint and bucket"

    # ------------------------------------------------------------------ what it would create

    @staticmethod
    def settings(spec: DeploymentSpec) -> SageMaker:
        return spec.deploy.sagemaker or SageMaker()

    def execution_role(self, spec: DeploymentSpec) -> str:
        role = self.settings(spec).execution_role_arn or self.client.defaults.sagemaker_execution_role_arn
        if not role:
            raise AwsTargetError(
                "aws-sagemaker: no execution role; set deploy.sagemaker.execution_role_arn or "
                "extra.cloud_deploy.sagemaker_execution_role_arn on the AWS connection"
            )
        return role

    def bucket(self, spec: DeploymentSpec, required: bool = True) -> str | None:
        bucket = self.settings(spec).bucket or self.client.defaults.sagemaker_bucket
        if not bucket and required:
            raise AwsTargetError(
                "aws-sagemaker: model_data needs an S3 bucket; set deploy.sagemaker.bucket or "
                "extra.cloud_deploy.sagemaker_bucket on the AWS connection"
            )
        return bucket

    def s3_prefix(self) -> str:
        return f"{S3_PREFIX}/{self.project.user_id}/{self.project.project_id}/"

    def model_data_key(self, sha256: str) -> str:
        return f"{self.s3_prefix()}{sha256[:16]}/{ARCHIVE_NAME}"

    def versioned_prefix(self, spec: DeploymentSpec) -> str:
        """Models and endpoint configs are this plus '-' and a config hash: 63 characters at most."""
        return self.project.resource_name(spec.deploy.service_name, max_length=63 - HASH_CHARS - 1)

    def versioned_name(self, spec: DeploymentSpec, config_hash: str) -> str:
        return f"{self.versioned_prefix(spec)}-{config_hash[:HASH_CHARS]}"

    @staticmethod
    def check_port(spec: DeploymentSpec) -> None:
        port = spec.deploy.network.container_port if spec.deploy.network else None
        if port and port != SAGEMAKER_PORT:
            raise AwsTargetError(
                f"aws-sagemaker: SageMaker sends /ping and /invocations to port {SAGEMAKER_PORT}; "
                f"the container listens on {port} (deploy.network.service_container_port)"
            )

    def render(self, spec: DeploymentSpec, image: str, model_data_url: str | None) -> EndpointPlan:
        self.check_port(spec)
        settings = self.settings(spec)
        sagemaker_check(spec.accelerator_request, settings.instance_type)
        container: dict[str, Any] = {"Image": image, "Environment": dict(sorted(spec.deploy.env.items()))}
        if model_data_url:
            container["ModelDataUrl"] = model_data_url
        model = {"PrimaryContainer": container, "ExecutionRoleArn": self.execution_role(spec)}
        variant = {
            "VariantName": VARIANT,
            "InstanceType": settings.instance_type,
            "InitialInstanceCount": settings.instance_count,
            "InitialVariantWeight": 1.0,
        }
        config: dict[str, Any] = {"ProductionVariants": [variant]}
        if settings.mode == "async":
            config["AsyncInferenceConfig"] = self.async_config(settings)
        return EndpointPlan(model, config)

    @staticmethod
    def async_config(settings: SageMaker) -> dict[str, Any]:
        options = settings.async_inference
        output = {"S3OutputPath": options.output_path}
        if options.failure_path:
            output["S3FailurePath"] = options.failure_path
        config: dict[str, Any] = {"OutputConfig": output}
        if options.max_concurrent_invocations_per_instance:
            config["ClientConfig"] = {
                "MaxConcurrentInvocationsPerInstance": options.max_concurrent_invocations_per_instance
            }
        return config

    def requests(self, spec: DeploymentSpec, endpoint: EndpointPlan, name: str) -> dict[str, dict[str, Any]]:
        tags = tag_list({**self.labels(spec, created=True), CONFIG_LABEL: endpoint.config_hash})
        variants = [{**variant, "ModelName": name} for variant in endpoint.config["ProductionVariants"]]
        return {
            "model": {"ModelName": name, **endpoint.model, "Tags": tags},
            "endpoint_config": {"EndpointConfigName": name, **endpoint.config, "ProductionVariants": variants,
                                "Tags": tags},
            "endpoint": {"EndpointName": self.name(spec), "EndpointConfigName": name,
                         "Tags": tag_list(self.labels(spec, created=True))},
        }

    def invocation_url(self, spec: DeploymentSpec) -> str:
        region = self.client.region
        domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        path = "async-invocations" if self.settings(spec).mode == "async" else "invocations"
        return f"https://runtime.sagemaker.{region}.{domain}/endpoints/{self.name(spec)}/{path}"

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: Any = None) -> dict[str, Any]:
        """Reads the AWS connection's region and defaults; calls no AWS API and packs nothing."""
        target = cls(project)
        model_data = None
        if target.settings(spec).model_data:
            model_data = f"s3://{target.bucket(spec)}/{target.s3_prefix()}<sha256[:16]>/{ARCHIVE_NAME}"
        endpoint = target.render(spec, "<the pushed image, by digest>", model_data)
        described = target.requests(spec, endpoint, f"{target.versioned_prefix(spec)}-<config hash>")
        return {**described, "model_data": target.settings(spec).model_data, "url": target.invocation_url(spec)}

    # ------------------------------------------------------------------ deploy

    def preflight(self, spec: DeploymentSpec) -> str:
        """Also run by the validate task: a missing role or bucket or unpackable model_data fails before any build."""
        self.check_port(spec)
        self.check_role(self.execution_role(spec), "aws-sagemaker execution role")
        if self.settings(spec).model_data:
            self.bucket(spec)
            model_files(project_dir(self.project), self.settings(spec).model_data)
        return "port, execution role, bucket and model data"

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        self.preflight(spec)
        endpoint = self.render(spec, image.pinned, self.upload_model_data(spec))
        name = self.versioned_name(spec, endpoint.config_hash)
        requests = self.requests(spec, endpoint, name)
        current = self.find_endpoint(spec)
        self.prune(spec, keep={name}, endpoint=current)
        resources = {"endpoint": self.name(spec), "endpoint_config": name, "model": name,
                     "model_data": endpoint.model["PrimaryContainer"].get("ModelDataUrl")}
        url = self.invocation_url(spec)
        if current and current["EndpointConfigName"] == name and current["EndpointStatus"] != "Failed":
            self.log(f"endpoint {self.name(spec)} already runs configuration {name}; nothing to change")
            return DeployResult(self.type, resources, url, changed=False)
        if current and current["EndpointStatus"] not in ("InService", "Failed"):
            raise AwsTargetError(
                f"aws-sagemaker: endpoint {self.name(spec)} is {current['EndpointStatus']}; "
                "deploy again once it is InService"
            )
        self.ensure_model(requests["model"])
        self.ensure_endpoint_config(requests["endpoint_config"])
        self.create_or_update(current, requests["endpoint"])
        return DeployResult(self.type, resources, url)

    def upload_model_data(self, spec: DeploymentSpec) -> str | None:
        paths = self.settings(spec).model_data
        if not paths:
            return None
        bucket = self.bucket(spec)
        s3 = self.aws("s3")
        with tempfile.TemporaryFile() as archive:
            sha256 = pack_model_data(project_dir(self.project), paths, archive)
            key = self.model_data_key(sha256)
            url = f"s3://{bucket}/{key}"
            if self.s3_exists(bucket, key):
                self.log(f"{url} is already uploaded (sha256 {sha256[:16]})")
                return url
            archive.seek(0)
            s3.upload_fileobj(archive, bucket, key, ExtraArgs={"Metadata": {"sha256": sha256}})
        self.log(f"uploaded {ARCHIVE_NAME} ({', '.join(paths)}) to {url}")
        return url

    def s3_exists(self, bucket: str, key: str) -> bool:
        try:
            self.aws("s3").head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def ensure_model(self, request: dict[str, Any]) -> None:
        """The name carries the hash of the model's inputs, so an existing one is this very model."""
        sagemaker = self.aws("sagemaker")
        if self.sagemaker_call("describe_model", ModelName=request["ModelName"]) is None:
            sagemaker.create_model(**request)
            self.log(f"created model {request['ModelName']}")

    def ensure_endpoint_config(self, request: dict[str, Any]) -> None:
        sagemaker = self.aws("sagemaker")
        name = request["EndpointConfigName"]
        if self.sagemaker_call("describe_endpoint_config", EndpointConfigName=name) is None:
            sagemaker.create_endpoint_config(**request)
            self.log(f"created endpoint config {name}")

    def create_or_update(self, current: dict[str, Any] | None, request: dict[str, Any]) -> None:
        sagemaker = self.aws("sagemaker")
        name, config = request["EndpointName"], request["EndpointConfigName"]
        if current and current["EndpointStatus"] == "Failed":
            self.log(f"endpoint {name} failed before ({current.get('FailureReason', '')}); deleting it to start over")
            self.delete_endpoint(name)
            current = None
        if current is None:
            sagemaker.create_endpoint(**request)
            self.log(f"creating endpoint {name} with configuration {config}")
            return
        sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config)
        self.log(f"updating endpoint {name}: {current['EndpointConfigName']} -> {config}")

    # ------------------------------------------------------------------ reading SageMaker

    def sagemaker_call(self, operation: str, **kwargs: Any) -> dict[str, Any] | None:
        """A describe call; ``None`` when SageMaker says the resource does not exist."""
        try:
            return getattr(self.aws("sagemaker"), operation)(**kwargs)
        except ClientError as error:
            details = error.response.get("Error", {})
            if details.get("Code") == "ValidationException" and "could not find" in details.get("Message", "").lower():
                return None
            raise

    def find_endpoint(self, spec: DeploymentSpec) -> dict[str, Any] | None:
        return self.sagemaker_call("describe_endpoint", EndpointName=self.name(spec))

    def is_ours(self, arn: str) -> bool:
        sagemaker = self.aws("sagemaker")
        tags = [tag for page in sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn) for tag in page["Tags"]]
        return {tag["Key"]: tag["Value"] for tag in tags}.get(LABEL_KEY) == self.owner

    def versions(self, spec: DeploymentSpec) -> dict[str, list[tuple[str, str]]]:
        """This project's models and endpoint configs, as (name, arn): matched by name prefix and by tag."""
        sagemaker, prefix = self.aws("sagemaker"), self.versioned_prefix(spec) + "-"
        listed = {
            "model": [(item["ModelName"], item["ModelArn"]) for page in
                      sagemaker.get_paginator("list_models").paginate(NameContains=prefix) for item in page["Models"]],
            "endpoint_config": [(item["EndpointConfigName"], item["EndpointConfigArn"]) for page in
                                sagemaker.get_paginator("list_endpoint_configs").paginate(NameContains=prefix)
                                for item in page["EndpointConfigs"]],
        }
        return {kind: [(name, arn) for name, arn in items if name.startswith(prefix) and self.is_ours(arn)]
                for kind, items in listed.items()}

    def in_use(self, endpoint: dict[str, Any] | None) -> set[str]:
        if endpoint is None:
            return set()
        config = self.sagemaker_call("describe_endpoint_config", EndpointConfigName=endpoint["EndpointConfigName"])
        models = {variant["ModelName"] for variant in (config or {}).get("ProductionVariants", [])}
        return {endpoint["EndpointConfigName"], *models}

    def prune(self, spec: DeploymentSpec, keep: set[str], endpoint: dict[str, Any] | None) -> list[str]:
        """Delete the project's models and configs the endpoint does not use, once it is not mid-change."""
        if endpoint is not None and endpoint["EndpointStatus"] not in ("InService", "Failed"):
            return []
        return self.delete_versions(spec, keep=keep | self.in_use(endpoint))

    def delete_versions(self, spec: DeploymentSpec, keep: set[str] = frozenset()) -> list[str]:
        sagemaker, removed = self.aws("sagemaker"), []
        versions = self.versions(spec)
        for name, _ in versions["endpoint_config"]:
            if name not in keep and self.deleted(sagemaker.delete_endpoint_config, EndpointConfigName=name):
                removed.append(f"sagemaker-endpoint-config/{name}")
        for name, _ in versions["model"]:
            if name not in keep and self.deleted(sagemaker.delete_model, ModelName=name):
                removed.append(f"sagemaker-model/{name}")
        if removed:
            self.log(f"deleted {', '.join(removed)}")
        return removed

    @staticmethod
    def deleted(delete: Any, **kwargs: Any) -> bool:
        try:
            delete(**kwargs)
        except ClientError as error:
            details = error.response.get("Error", {})
            if details.get("Code") == "ValidationException" and "could not find" in details.get("Message", "").lower():
                return False
            raise
        return True

    # ------------------------------------------------------------------ status

    def ready_timeout_seconds(self, spec: DeploymentSpec) -> int:
        return max(spec.deploy.readiness.timeout_seconds, READY_SECONDS)

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        name = self.name(spec)
        endpoint = self.find_endpoint(spec)
        if endpoint is None:
            return TargetStatus("absent", message=f"SageMaker endpoint {name} does not exist")
        return endpoint_status(endpoint, self.settings(spec).mode, self.invocation_url(spec))

    # ------------------------------------------------------------------ stop

    def remove(self, spec: DeploymentSpec) -> list[str]:
        removed: list[str] = []
        endpoint = self.find_endpoint(spec)
        if endpoint and self.is_ours(endpoint["EndpointArn"]):
            endpoint = self.wait_endpoint(self.name(spec), lambda found: found["EndpointStatus"] not in STARTING)
            if endpoint and endpoint["EndpointStatus"] != "Deleting":
                self.delete_endpoint(self.name(spec))
            removed.append(f"sagemaker-endpoint/{self.name(spec)}")
        removed += self.delete_versions(spec)
        removed += self.delete_model_data(spec)
        removed += self.delete_repository(spec)
        return removed

    def wait_endpoint(self, name: str, done: Any, seconds: float = SETTLE_SECONDS) -> dict[str, Any] | None:
        """Describe the endpoint until ``done(it)`` or it is gone; returns the last answer (None when gone)."""
        return poll_until(lambda: self.sagemaker_call("describe_endpoint", EndpointName=name),
                               lambda found: found is None or done(found), seconds, 5)

    def delete_endpoint(self, name: str) -> None:
        self.deleted(self.aws("sagemaker").delete_endpoint, EndpointName=name)
        if self.wait_endpoint(name, lambda found: False) is not None:
            raise AwsTargetError(f"aws-sagemaker: endpoint {name} is still being deleted after {SETTLE_SECONDS} s",
                                 retryable=True)
        self.log(f"deleted endpoint {name}")

    def delete_model_data(self, spec: DeploymentSpec) -> list[str]:
        bucket = self.bucket(spec, required=False)
        if not bucket:
            return []
        s3, removed = self.aws("s3"), []
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=self.s3_prefix()):
                keys = [item["Key"] for item in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})
                    removed += [f"s3://{bucket}/{key}" for key in keys]
        except s3.exceptions.NoSuchBucket:
            return []
        return removed


def endpoint_status(endpoint: dict[str, Any], mode: str, url: str) -> TargetStatus:
    """DescribeEndpoint's answer as a target status."""
    name, state = endpoint["EndpointName"], endpoint["EndpointStatus"]
    reason = endpoint.get("FailureReason") or ""
    details = {"endpoint": name, "endpoint_config": endpoint.get("EndpointConfigName"), "endpoint_status": state,
               "mode": mode, **LIMITS[mode]}
    if state == "InService" and reason:
        # An update that failed was rolled back: the endpoint still serves its previous configuration.
        return TargetStatus("failed", message=f"SageMaker endpoint {name}: update failed and was rolled back: {reason}",
                            details=details)
    if state == "InService":
        return TargetStatus("running", url, f"SageMaker endpoint {name} is in service at {url}", details)
    if state in ("Failed", "UpdateRollbackFailed"):
        because = f": {reason}" if reason else ""
        return TargetStatus("failed", message=f"SageMaker endpoint {name} is {state}{because}", details=details)
    if state in STARTING:
        return TargetStatus("starting", message=f"SageMaker endpoint {name} is {state}", details=details)
    if state == "Deleting":
        return TargetStatus("absent", message=f"SageMaker endpoint {name} is being deleted", details=details)
    return TargetStatus("unknown", message=f"SageMaker endpoint {name} is {state}", details=details)
