"""The ``aws-ecs`` target: an ECS service (Fargate, or EC2 when a GPU is asked) running the image by digest.

Everything it creates is named from the project and tagged with it. A cluster is reused when
the spec or the connection names one, else one is created per project and tagged as created
by it, so stop deletes a cluster only when this project made it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cloud_deploy_provider.accelerators import ecs_resources
from cloud_deploy_provider.clients import poll_until
from cloud_deploy_provider.identity import LABEL_KEY, ProjectRef
from cloud_deploy_provider.spec import DeploymentSpec
from cloud_deploy_provider.targets import DeployResult, ImageRef, TargetStatus
from cloud_deploy_provider.targets._aws import CREATED_BY, AwsTarget, AwsTargetError, tag_list
from cloud_deploy_provider.targets.base import CONFIG_LABEL

DEFAULT_CPU_UNITS = 1024
DEFAULT_MEMORY_MB = 2048
LOG_RETENTION_DAYS = 30
STOP_WAIT_SECONDS = 120

# Fargate's allowed task sizes: cpu units -> (lowest MiB, highest MiB, step MiB).
FARGATE_SIZES = {
    256: (512, 2048, None),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}


def _fargate_memory_ok(cpu: int, memory: int) -> bool:
    low, high, step = FARGATE_SIZES[cpu]
    if step is None:
        return memory in (512, 1024, 2048)
    return low <= memory <= high and (memory - low) % step == 0


class EcsTarget(AwsTarget):
    type: ClassVar[str] = "aws-ecs"
    stop_needs: ClassVar[str] = "the cluster and service"

    # ------------------------------------------------------------------ what it would create

    def launch_type(self, spec: DeploymentSpec) -> str:
        ecs = spec.deploy.ecs
        wants_gpu = bool(ecs_resources(spec.accelerator_request))
        chosen = ecs.launch_type if ecs and ecs.launch_type else ("EC2" if wants_gpu else "FARGATE")
        if wants_gpu and chosen == "FARGATE":
            raise AwsTargetError("aws-ecs: Fargate has no GPUs; set deploy.ecs.launch_type: ec2 on a GPU cluster")
        return chosen

    def task_size(self, spec: DeploymentSpec, launch_type: str) -> tuple[int, int]:
        resources = spec.deploy.resources
        cpu = round(resources.cpu * 1024) if resources.cpu else DEFAULT_CPU_UNITS
        memory = resources.memory or DEFAULT_MEMORY_MB
        if launch_type == "FARGATE":
            if cpu not in FARGATE_SIZES:
                allowed = ", ".join(f"{units / 1024:g}" for units in FARGATE_SIZES)
                raise AwsTargetError(f"aws-ecs: Fargate takes cpu {allowed} (vCPU), not {cpu / 1024:g}")
            if not _fargate_memory_ok(cpu, memory):
                low, high, step = FARGATE_SIZES[cpu]
                rule = "512, 1024 or 2048" if step is None else f"{low} to {high} in steps of {step}"
                raise AwsTargetError(f"aws-ecs: Fargate with cpu {cpu / 1024:g} takes memory {rule} MB, not {memory}")
        return cpu, memory

    def cluster_name(self, spec: DeploymentSpec) -> str:
        ecs = spec.deploy.ecs
        return (ecs.cluster if ecs and ecs.cluster else None) or self.client.defaults.ecs_cluster or self.name(spec)

    def log_group(self, spec: DeploymentSpec) -> str:
        return f"/cloud-deploy/{self.name(spec)}"

    def network(self, spec: DeploymentSpec) -> dict[str, Any]:
        vpc, defaults = spec.deploy.awsvpc, self.client.defaults
        subnets = (vpc.subnets if vpc else []) or defaults.subnets
        if not subnets:
            raise AwsTargetError(
                "aws-ecs: no subnets; set deploy.awsvpc.subnets or extra.cloud_deploy.subnets on the AWS connection"
            )
        return {
            "awsvpcConfiguration": {
                "subnets": subnets,
                "securityGroups": (vpc.security_groups if vpc else []) or defaults.security_groups,
                "assignPublicIp": (vpc.assign_publicip if vpc else None) or defaults.assign_public_ip,
            }
        }

    def roles(self, spec: DeploymentSpec) -> dict[str, str]:
        ecs, defaults = spec.deploy.ecs, self.client.defaults
        roles = {
            "executionRoleArn": (ecs.execution_role_arn if ecs else None) or defaults.execution_role_arn,
            "taskRoleArn": (ecs.task_role_arn if ecs else None) or defaults.task_role_arn,
        }
        return {key: value for key, value in roles.items() if value}

    def task_definition(self, spec: DeploymentSpec, image: str) -> dict[str, Any]:
        deploy = spec.deploy
        launch_type = self.launch_type(spec)
        cpu, memory = self.task_size(spec, launch_type)
        roles = self.roles(spec)
        if launch_type == "FARGATE" and "executionRoleArn" not in roles:
            raise AwsTargetError(
                "aws-ecs: Fargate needs an execution role to pull from ECR and write CloudWatch logs; set "
                "deploy.ecs.execution_role_arn or extra.cloud_deploy.execution_role_arn on the AWS connection"
            )
        container: dict[str, Any] = {
            "name": deploy.service_name,
            "image": image,
            "essential": True,
            "environment": [{"name": key, "value": value} for key, value in sorted(deploy.env.items())],
            "workingDirectory": deploy.work_dir,
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": self.log_group(spec),
                    "awslogs-region": self.client.region,
                    "awslogs-stream-prefix": "cloud-deploy",
                },
            },
        }
        port = deploy.network.container_port if deploy.network else None
        if port:
            container["portMappings"] = [{"containerPort": port, "hostPort": port, "protocol": "tcp"}]
        accelerators = ecs_resources(spec.accelerator_request)
        if accelerators:
            container["resourceRequirements"] = [{"type": kind, "value": str(n)} for kind, n in accelerators.items()]
        return {
            "family": self.name(spec),
            "networkMode": "awsvpc",
            "requiresCompatibilities": [launch_type],
            "cpu": str(cpu),
            "memory": str(memory),
            "containerDefinitions": [container],
            **roles,
        }

    def service_request(self, spec: DeploymentSpec, task_definition: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "taskDefinition": task_definition,
            "desiredCount": spec.deploy.replicas,
            "networkConfiguration": self.network(spec),
            "deploymentConfiguration": {
                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
            },
        }
        ecs = spec.deploy.ecs
        if ecs and ecs.target_group_arn and spec.deploy.network and spec.deploy.network.container_port:
            request["loadBalancers"] = [
                {
                    "targetGroupArn": ecs.target_group_arn,
                    "containerName": spec.deploy.service_name,
                    "containerPort": spec.deploy.network.container_port,
                }
            ]
        return request

    @classmethod
    def describe(cls, project: ProjectRef, spec: DeploymentSpec, settings: Any = None) -> dict[str, Any]:
        """Reads the AWS connection's region and defaults; calls no AWS API."""
        target = cls(project)
        launch_type = target.launch_type(spec)
        return {
            "cluster": target.cluster_name(spec),
            "launchType": launch_type,
            "taskDefinition": target.task_definition(spec, "<the pushed image, by digest>"),
            "service": {"serviceName": target.name(spec), **target.service_request(spec, "<the task definition>")},
        }

    # ------------------------------------------------------------------ deploy

    def deploy(self, spec: DeploymentSpec, image: ImageRef) -> DeployResult:
        ecs = self.aws("ecs")
        definition = self.task_definition(spec, image.pinned)
        request = self.service_request(spec, "")
        self.check_references(definition, request)
        cluster = self.ensure_cluster(spec)
        service_name = self.name(spec)
        config_hash = self.config_hash([definition, request])
        current = self.find_service(cluster, service_name)
        if current and self.config_of(current["taskDefinition"]) == config_hash:
            self.log(f"service {service_name} already runs this configuration; nothing to change")
            return DeployResult(self.type, self.resources(cluster, current["taskDefinition"], service_name), changed=False)
        self.ensure_log_group(spec)
        labels = {**self.labels(spec), CONFIG_LABEL: config_hash}
        registered = ecs.register_task_definition(**definition, tags=tag_list(labels, "key", "value"))
        task_definition = registered["taskDefinition"]["taskDefinitionArn"]
        self.log(f"registered task definition {task_definition}")
        request["taskDefinition"] = task_definition
        if current:
            ecs.update_service(cluster=cluster, service=service_name, forceNewDeployment=True,
                               **{k: v for k, v in request.items() if k != "loadBalancers"})
            self.log(f"updated service {service_name} in cluster {cluster}: rolling out {task_definition}")
        else:
            ecs.create_service(
                cluster=cluster,
                serviceName=service_name,
                launchType=definition["requiresCompatibilities"][0],
                tags=tag_list(self.labels(spec), "key", "value"),
                propagateTags="SERVICE",
                enableECSManagedTags=True,
                **request,
            )
            self.log(f"created service {service_name} in cluster {cluster}")
        return DeployResult(self.type, self.resources(cluster, task_definition, service_name))

    @staticmethod
    def resources(cluster: str, task_definition: str, service: str) -> dict[str, str]:
        return {"cluster": cluster, "service": service, "task_definition": task_definition}

    def preflight(self, spec: DeploymentSpec) -> str:
        """Run by the validate task, so a wrong subnet or role fails before anything is built or created."""
        self.check_references(self.task_definition(spec, "<image>"), self.service_request(spec, "<task definition>"))
        return "network, roles and sizes"

    def check_references(self, definition: dict[str, Any], request: dict[str, Any]) -> None:
        vpc = request["networkConfiguration"]["awsvpcConfiguration"]
        self.check_network(vpc["subnets"], vpc["securityGroups"])
        for key, what in (("executionRoleArn", "execution role"), ("taskRoleArn", "task role")):
            if key in definition:
                self.check_role(definition[key], f"aws-ecs {what}")

    def ensure_cluster(self, spec: DeploymentSpec) -> str:
        ecs = self.aws("ecs")
        name = self.cluster_name(spec)
        found = ecs.describe_clusters(clusters=[name])["clusters"]
        if found and found[0]["status"] == "ACTIVE":
            return name
        if name != self.name(spec):
            raise AwsTargetError(f"aws-ecs: cluster {name} does not exist (it is configured, so it is not created)")
        ecs.create_cluster(clusterName=name, tags=tag_list(self.labels(spec, created=True), "key", "value"))
        self.log(f"created cluster {name}")
        return name

    def ensure_log_group(self, spec: DeploymentSpec) -> None:
        logs = self.aws("logs")
        group = self.log_group(spec)
        try:
            logs.create_log_group(logGroupName=group, tags=self.labels(spec, created=True))
            logs.put_retention_policy(logGroupName=group, retentionInDays=LOG_RETENTION_DAYS)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass

    def find_service(self, cluster: str, service_name: str) -> dict[str, Any] | None:
        ecs = self.aws("ecs")
        try:
            services = ecs.describe_services(cluster=cluster, services=[service_name])["services"]
        except ecs.exceptions.ClusterNotFoundException:
            return None
        active = [service for service in services if service["status"] != "INACTIVE"]
        return active[0] if active else None

    def task_definition_tags(self, task_definition: str) -> dict[str, str]:
        answer = self.aws("ecs").describe_task_definition(taskDefinition=task_definition, include=["TAGS"])
        return {tag["key"]: tag["value"] for tag in answer.get("tags", [])}

    def config_of(self, task_definition: str) -> str | None:
        return self.task_definition_tags(task_definition).get(CONFIG_LABEL)

    # ------------------------------------------------------------------ status

    def status(self, spec: DeploymentSpec) -> TargetStatus:
        cluster, service_name = self.cluster_name(spec), self.name(spec)
        service = self.find_service(cluster, service_name)
        if service is None:
            return TargetStatus("absent", message=f"ECS service {service_name} does not exist in cluster {cluster}")
        details = {
            "cluster": cluster,
            "service": service_name,
            "task_definition": service["taskDefinition"],
            "running": service.get("runningCount", 0),
            "desired": service.get("desiredCount", 0),
        }
        primary = next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), None)
        rollout = (primary or {}).get("rolloutState", "IN_PROGRESS")
        reason = (primary or {}).get("rolloutStateReason") or ""
        details["rollout"] = rollout
        if rollout == "FAILED":
            events = "; ".join(event["message"] for event in service.get("events", [])[:3])
            return TargetStatus("failed", message=f"ECS rollout failed: {reason} {events}".strip(), details=details)
        if rollout != "COMPLETED" or service.get("runningCount", 0) < service.get("desiredCount", 0):
            message = f"ECS rollout {rollout}: {details['running']}/{details['desired']} tasks running"
            return TargetStatus("starting", message=message, details=details)
        url = self.endpoint(spec, cluster, service)
        where = f" at {url}" if url else " (no public endpoint: private subnets or no load balancer)"
        return TargetStatus("running", url, f"ECS service {service_name} is running{where}", details)

    def endpoint(self, spec: DeploymentSpec, cluster: str, service: dict[str, Any]) -> str | None:
        """The load balancer's DNS name, else the first task's public IP and container port."""
        for balancer in service.get("loadBalancers", []):
            url = self.load_balancer_url(balancer.get("targetGroupArn"))
            if url:
                return url
        port = spec.deploy.network.container_port if spec.deploy.network else None
        ecs = self.aws("ecs")
        task_arns = ecs.list_tasks(cluster=cluster, serviceName=service["serviceName"]).get("taskArns", [])
        if not task_arns or not port:
            return None
        for task in ecs.describe_tasks(cluster=cluster, tasks=task_arns[:10]).get("tasks", []):
            ip = self.public_ip(task)
            if ip:
                return f"http://{ip}:{port}"
        return None

    def load_balancer_url(self, target_group_arn: str | None) -> str | None:
        if not target_group_arn:
            return None
        elb = self.aws("elbv2")
        groups = elb.describe_target_groups(TargetGroupArns=[target_group_arn])["TargetGroups"]
        balancer_arns = groups[0].get("LoadBalancerArns", []) if groups else []
        if not balancer_arns:
            return None
        balancer = elb.describe_load_balancers(LoadBalancerArns=balancer_arns[:1])["LoadBalancers"][0]
        listeners = elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"]).get("Listeners", [])
        listener = listeners[0] if listeners else {"Protocol": "HTTP", "Port": 80}
        scheme = "https" if listener.get("Protocol") == "HTTPS" else "http"
        default_port = 443 if scheme == "https" else 80
        suffix = "" if listener.get("Port") == default_port else f":{listener.get('Port')}"
        return f"{scheme}://{balancer['DNSName']}{suffix}"

    def public_ip(self, task: dict[str, Any]) -> str | None:
        for attachment in task.get("attachments", []):
            details = {item["name"]: item["value"] for item in attachment.get("details", [])}
            interface = details.get("networkInterfaceId")
            if not interface:
                continue
            found = self.aws("ec2").describe_network_interfaces(NetworkInterfaceIds=[interface])
            for eni in found.get("NetworkInterfaces", []):
                ip = eni.get("Association", {}).get("PublicIp")
                if ip:
                    return ip
        return None

    # ------------------------------------------------------------------ stop

    def remove(self, spec: DeploymentSpec) -> list[str]:
        removed: list[str] = []
        cluster, service_name = self.cluster_name(spec), self.name(spec)
        if self.find_service(cluster, service_name):
            removed += self.delete_service(cluster, service_name)
        removed += self.deregister_task_definitions(spec)
        removed += self.delete_log_group(spec)
        removed += self.delete_cluster_if_ours(cluster)
        removed += self.delete_repository(spec)
        return removed

    def delete_service(self, cluster: str, service_name: str) -> list[str]:
        ecs = self.aws("ecs")
        ecs.update_service(cluster=cluster, service=service_name, desiredCount=0)
        ecs.delete_service(cluster=cluster, service=service_name, force=True)
        poll_until(lambda: self.find_service(cluster, service_name), lambda found: not found, STOP_WAIT_SECONDS, 2)
        for task in ecs.list_tasks(cluster=cluster, serviceName=service_name).get("taskArns", []):
            ecs.stop_task(cluster=cluster, task=task, reason="cloud-deploy stop")
        self.log(f"deleted service {service_name} from cluster {cluster}")
        return [f"ecs-service/{cluster}/{service_name}"]

    def deregister_task_definitions(self, spec: DeploymentSpec) -> list[str]:
        """Every revision of this project's family that carries its tag; then delete them where AWS can."""
        ecs = self.aws("ecs")
        family = self.name(spec)
        arns = []
        for page in ecs.get_paginator("list_task_definitions").paginate(familyPrefix=family, status="ACTIVE"):
            arns += page["taskDefinitionArns"]
        ours = [arn for arn in arns if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family and self.is_ours(arn)]
        for arn in ours:
            ecs.deregister_task_definition(taskDefinition=arn)
        if ours and hasattr(ecs, "delete_task_definitions"):
            for start in range(0, len(ours), 10):
                ecs.delete_task_definitions(taskDefinitions=ours[start : start + 10])
        return [f"ecs-task-definition/{arn.rsplit('/', 1)[-1]}" for arn in ours]

    def is_ours(self, task_definition_arn: str) -> bool:
        return self.task_definition_tags(task_definition_arn).get(LABEL_KEY) == self.owner

    def delete_log_group(self, spec: DeploymentSpec) -> list[str]:
        logs = self.aws("logs")
        try:
            logs.delete_log_group(logGroupName=self.log_group(spec))
        except logs.exceptions.ResourceNotFoundException:
            return []
        return [f"log-group/{self.log_group(spec)}"]

    def delete_cluster_if_ours(self, cluster: str) -> list[str]:
        ecs = self.aws("ecs")
        found = ecs.describe_clusters(clusters=[cluster], include=["TAGS"])["clusters"]
        if not found or found[0]["status"] != "ACTIVE":
            return []
        tags = {tag["key"]: tag["value"] for tag in found[0].get("tags", [])}
        if tags.get(CREATED_BY) != self.owner:
            return []
        ecs.delete_cluster(cluster=cluster)
        self.log(f"deleted cluster {cluster} (created by this project)")
        return [f"ecs-cluster/{cluster}"]
