"""``cloud-deploy``: validate and render specs without touching anything, and serve the 8890 gateway."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cloud_deploy_provider.jobs import JOB_TARGETS


def _load(path: Path, legacy_forms: list[str] | None = None):
    """The spec and its folder; messages name the yaml relative to the shared root when it is under it."""
    from cloud_deploy_provider.spec import check_project_files, load_spec
    from cloud_deploy_provider.workspace import shown_as_shared

    spec_file = path / "deployment.yaml" if path.is_dir() else path
    spec = load_spec(spec_file, source=shown_as_shared(spec_file), legacy_forms=legacy_forms)
    check_project_files(spec, spec_file.parent)
    return spec, spec_file.parent


def _warn(spec_file: Path, warnings: list[str]) -> None:
    from cloud_deploy_provider.workspace import shown_as_shared

    for warning in warnings:
        print(f"warning: {shown_as_shared(spec_file)}: {warning}", file=sys.stderr)


def validate(args: argparse.Namespace) -> int:
    """Exit 0 for a valid spec, legacy forms included; they are printed as warnings on stderr."""
    warnings: list[str] = []
    spec, folder = _load(args.path, warnings)
    _warn(folder / "deployment.yaml", warnings)
    print(f"ok: {args.path} (deploy.type {spec.deploy.type}, service {spec.deploy.service_name})")
    return 0


def render(args: argparse.Namespace) -> int:
    from cloud_deploy_provider.build import render_build
    from cloud_deploy_provider.catalog import load_catalog
    from cloud_deploy_provider.identity import ProjectRef
    from cloud_deploy_provider.settings import BuildSettings, EngineSettings
    from cloud_deploy_provider.jobs import job_runner_class
    from cloud_deploy_provider.targets import target_class

    warnings: list[str] = []
    spec, folder = _load(args.path, warnings)
    _warn(folder / "deployment.yaml", warnings)
    settings = BuildSettings.from_env()
    plan = render_build(spec, folder, settings, load_catalog(settings.catalog_path))
    print("# Dockerfile")
    print(plan.dockerfile)
    print("# context files")
    for name in sorted(plan.files):
        print(f"  {name} ({len(plan.files[name])} bytes)")
    target = target_class(spec.deploy.type)
    project = ProjectRef(args.user_id, args.project_id)
    print(f"# {spec.deploy.type} target resources")
    print(json.dumps(target.describe(project, spec, EngineSettings.from_env()), indent=2))
    for job in spec.schedule.jobs if spec.schedule else []:
        described = job_runner_class(job.target).describe(project, spec, job)
        if described is not None:
            print(f"# {job.target} job {job.name}")
            print(json.dumps(described, indent=2))
    return 0


def create_job(args: argparse.Namespace) -> int:
    """The MLOps tutorial's workflow: a scheduled job for an existing image, written into deployment.yaml."""
    import yaml

    from cloud_deploy_provider.identity import ProjectRef
    from cloud_deploy_provider.scheduled import job_dag_id
    from cloud_deploy_provider.spec import validate_spec_data
    from cloud_deploy_provider.workspace import SPEC_FILE_NAME, shared_root, shown_as_shared

    project = ProjectRef(args.user_id, args.project_id)
    folder = shared_root() / "common" / project.user_id / project.project_id
    spec_file = folder / SPEC_FILE_NAME
    try:
        data = yaml.safe_load(spec_file.read_text()) if spec_file.exists() else {
            "build": {}, "deploy": {"type": "docker", "service_name": args.job_id},
        }
    except yaml.YAMLError as error:
        raise ValueError(f"{shown_as_shared(spec_file)}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{shown_as_shared(spec_file)}: the top level must be a mapping")
    job = {"name": args.job_id, "cron": args.schedule, "image": args.image, "retries": args.retries,
           "timeout_seconds": args.timeout, "resources": {"gpu": args.gpu_count}, "target": args.target}
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        job["command"] = command
    if args.gpu_type:
        job["resources"]["gpu_type"] = args.gpu_type
    schedule = data.setdefault("schedule", {}) or {}
    data["schedule"] = schedule
    schedule["jobs"] = [other for other in schedule.get("jobs") or [] if other.get("name") != args.job_id] + [job]
    validate_spec_data(data, source=shown_as_shared(spec_file))  # nothing is written unless the result is valid
    folder.mkdir(parents=True, exist_ok=True)
    partial = spec_file.with_suffix(".yaml.partial")
    partial.write_text(yaml.safe_dump(data, sort_keys=False))
    partial.replace(spec_file)
    dag_id = job_dag_id(project, args.job_id)
    print(f"{shown_as_shared(spec_file)}: job {args.job_id} ({args.schedule}) -> DAG {dag_id}")
    return 0


def gateway(args: argparse.Namespace) -> int:
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    import uvicorn

    # Each worker is a process with its own deployment index; one of them prints the progress lines.
    os.environ["CLOUD_DEPLOY_GATEWAY_PORT"] = str(args.port)
    uvicorn.run("cloud_deploy_provider.api.app:create_gateway_app", factory=True, host=args.host, port=args.port,
                log_level=args.log_level, workers=args.workers, access_log=args.access_log)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloud-deploy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, function, help_text in (
        ("validate", validate, "check a deployment.yaml (or a project folder) and the files it names"),
        ("render", render, "print the Dockerfile and the target's resources, touching nothing"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("path", type=Path)
        command.set_defaults(function=function)
        if name == "render":
            command.add_argument("--user-id", default="user")
            command.add_argument("--project-id", default="project")
    job = commands.add_parser("job", help="scheduled batch jobs").add_subparsers(dest="job_command", required=True)
    create = job.add_parser("create", help="add (or replace) a scheduled job for an existing image to a project's "
                                           "deployment.yaml; the command follows '--'")
    create.add_argument("--user-id", required=True)
    create.add_argument("--project-id", required=True)
    create.add_argument("--job-id", required=True, help="the job's name: lowercase letters, digits, '-'")
    create.add_argument("--image", required=True)
    create.add_argument("--schedule", required=True, help="cron ('0 2 * * *') or @hourly/@daily/@weekly/...")
    create.add_argument("--gpu-type")
    create.add_argument("--gpu-count", type=int, default=0)
    create.add_argument("--retries", type=int, default=0)
    create.add_argument("--timeout", type=int, default=3600, help="seconds")
    create.add_argument("--target", default="docker", help=f"where it runs: {', '.join(JOB_TARGETS)}")
    create.add_argument("command", nargs=argparse.REMAINDER)
    create.set_defaults(function=create_job)
    serve = commands.add_parser("gateway", help="serve the TANGO REST API on its own (port 8890)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8890)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("CLOUD_DEPLOY_GATEWAY_WORKERS", "1")),
                       help="worker processes (default $CLOUD_DEPLOY_GATEWAY_WORKERS or 1)")
    serve.add_argument("--access-log", action="store_true",
                       help="log every request (off by default: TANGO polls often, and stdout carries progress)")
    serve.set_defaults(function=gateway)
    args = parser.parse_args(argv)
    try:
        return args.function(args)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
