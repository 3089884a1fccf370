"""Tests for cloud_deploy_provider.spec: deployment.yaml models and the safe loader."""

import os
import pathlib
import pickle
import subprocess
import sys
import time

import pytest
import yaml

from cloud_deploy_provider.spec import (
    KNOWN_DEPLOY_TYPES,
    MAX_SPEC_BYTES,
    Accelerator,
    DeploymentSpec,
    SpecError,
    check_project_files,
    load_spec,
    parse_spec_text,
)

SAMPLES_DIR = pathlib.Path(__file__).resolve().parents[1] / "data" / "tango_samples"
SAMPLES = sorted(SAMPLES_DIR.glob("*.yaml"))
LOCALDOCKER = SAMPLES_DIR / "deployment_localdocker.yaml"


def base_spec() -> dict:
    return yaml.safe_load(LOCALDOCKER.read_text())


def with_changes(**sections) -> str:
    """The local-docker sample with some sections' keys replaced (value None removes the key)."""
    data = base_spec()
    for dotted, value in sections.items():
        *parents, key = dotted.split("__")
        target = data
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return yaml.safe_dump(data)


def problems_of(text: str | bytes) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec_text(text)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def single_problem(text: str | bytes) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- samples


def test_all_four_samples_are_present():
    assert [path.name for path in SAMPLES] == [
        "deployment_aws_ecs.yaml",
        "deployment_gcp_cloudrun.yaml",
        "deployment_localdocker.yaml",
        "deployment_rebellion_atom.yaml",
    ]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.stem)
def test_sample_validates_unchanged(path):
    spec = load_spec(path)
    assert spec == parse_spec_text(path.read_bytes())
    assert spec.deploy.type in KNOWN_DEPLOY_TYPES
    assert spec.build.architecture == "x86"


@pytest.mark.parametrize(
    ("name", "deploy_type", "host_port", "container_port"),
    [
        ("deployment_localdocker.yaml", "docker", 8890, 8890),
        ("deployment_gcp_cloudrun.yaml", "gcp-cloudrun", 8088, 8088),
        ("deployment_aws_ecs.yaml", "aws-ecs", 8080, 8080),
    ],
)
def test_cloud_samples_values(name, deploy_type, host_port, container_port):
    spec = load_spec(SAMPLES_DIR / name)
    build, deploy = spec.build, spec.deploy
    assert build.accelerator.type == "cpu"
    assert build.accelerator.count == 0
    assert build.os == "ubuntu20.04"
    assert build.image_uri == "us-docker.pkg.dev/cloudrun/container/hello:latest"
    assert build.components.engine == "pytorch"
    assert build.components.python_version == "3.9"
    assert build.components.pip_requirements == ["torch>=1.1.0", "flask==1.2.3"]
    assert build.components.custom_packages.apt == ["vim", "hello"]
    assert deploy.type == deploy_type
    assert deploy.entrypoint == ["run.sh", "-p", "opt1", "arg"]
    assert deploy.work_dir == "/workspace"
    assert deploy.pre_exec == []
    assert deploy.network.service_host_ip == "1.2.3.4"
    assert deploy.network.service_host_port == host_port
    assert deploy.network.container_port == container_port
    assert deploy.k8s.nfsip == "192.168.0.189"
    assert deploy.k8s.nfspath == "/var/lib/docker/volumes/tango_shared/_data"
    assert spec.optional.nn_file == "abc.py"
    assert spec.optional.weight_file == "abc.pt"
    assert spec.optional.annotation_file == "coco.dat"


def test_aws_ecs_sample_resources():
    deploy = load_spec(SAMPLES_DIR / "deployment_aws_ecs.yaml").deploy
    assert deploy.service_name == "yolov7-e6e"
    assert deploy.resources.cpu == 4
    assert deploy.resources.memory == 8192
    assert deploy.resources.gpu is None
    assert deploy.network.service_container_port == 8080


def test_rebellion_sample_values():
    spec = load_spec(SAMPLES_DIR / "deployment_rebellion_atom.yaml")
    assert spec.build.accelerator.type == "npu"
    assert spec.build.accelerator.count == 1
    assert spec.build.image_uri == "bai-repo:7080/bai/atom-runtime:latest"
    assert spec.build.components.python_version is None
    assert spec.build.components.pip_requirements == []
    assert spec.deploy.type == "compute-session"
    assert spec.deploy.entrypoint is None
    assert spec.deploy.resources.cpu == 8
    assert spec.deploy.resources.memory == 32768
    assert spec.deploy.resources.extra == {"atom-max.device": 1}
    assert spec.deploy.model_service.model == "Qwen25-14b"
    assert spec.deploy.model_service.scaling_group == "atom-max"
    assert spec.optional is None


def test_legacy_name_key_fills_service_name():
    spec = parse_spec_text(with_changes(deploy__service_name=None, deploy__name="legacy-svc"))
    assert spec.deploy.service_name == "legacy-svc"
    assert spec.to_dict()["deploy"]["service_name"] == "legacy-svc"


def test_service_name_and_legacy_name_together_are_rejected():
    problem = single_problem(with_changes(deploy__name="other"))
    assert problem.startswith("deploy.name: ")
    assert "service_name" in problem


def test_missing_service_name_is_reported():
    assert single_problem(with_changes(deploy__service_name=None)) == "deploy.service_name: required"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.stem)
def test_to_dict_round_trips(path):
    spec = load_spec(path)
    dumped = spec.to_dict()
    assert DeploymentSpec.model_validate(dumped) == spec
    assert parse_spec_text(yaml.safe_dump(dumped)) == spec
    assert "name" not in dumped["deploy"]


def test_to_dict_keeps_vendor_resources_and_drops_nones():
    dumped = load_spec(SAMPLES_DIR / "deployment_rebellion_atom.yaml").to_dict()
    assert dumped["deploy"]["resources"] == {"cpu": 8, "memory": 32768, "atom-max.device": 1}
    assert "optional" not in dumped
    assert "os" not in dumped["build"]


def test_module_does_not_import_airflow_or_docker():
    code = "import sys, cloud_deploy_provider.spec; print(sorted({'airflow', 'docker'} & set(sys.modules)))"
    plugins = pathlib.Path(__file__).resolve().parents[2] / "plugins"
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(plugins)}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- accelerator


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("cpu", {"type": "cpu", "vendor": None, "model": None, "count": 0}),
        ("gpu", {"type": "gpu", "vendor": None, "model": None, "count": 1}),
        ("gpu:nvidia", {"type": "gpu", "vendor": "nvidia", "model": None, "count": 1}),
        ("gpu:nvidia:A100:2", {"type": "gpu", "vendor": "nvidia", "model": "a100", "count": 2}),
        ("npu:rebellion:atom", {"type": "npu", "vendor": "rebellion", "model": "atom", "count": 1}),
        (
            {"type": "gpu", "vendor": "nvidia", "model": "h100", "count": 4, "shares": 0.5},
            {"type": "gpu", "vendor": "nvidia", "model": "h100", "count": 4, "shares": 0.5},
        ),
        ({"type": "tpu", "vendor": "google"}, {"type": "tpu", "vendor": "google", "count": 1}),
        ({"type": "cpu"}, {"type": "cpu", "count": 0}),
    ],
)
def test_accelerator_forms(given, expected):
    accelerator = parse_spec_text(with_changes(build__accelerator=given)).build.accelerator
    for field, value in expected.items():
        assert getattr(accelerator, field) == value
    assert Accelerator.model_validate(given) == accelerator


def test_accelerator_defaults_to_cpu():
    spec = parse_spec_text(with_changes(build__accelerator=None))
    assert (spec.build.accelerator.type, spec.build.accelerator.count) == ("cpu", 0)


@pytest.mark.parametrize(
    ("given", "path", "fragment"),
    [
        ("fpga", "build.accelerator.type", "'fpga' is not a known accelerator type"),
        ("gpu:nvidiaa", "build.accelerator.vendor", "did you mean 'nvidia'?"),
        ("gpu:acme:x1", "build.accelerator.vendor", "'acme'"),
        ("gpu:nvidia:a100:-1", "build.accelerator.count", "got -1"),
        ("gpu:nvidia:a100:two", "build.accelerator.count", "'two'"),
        ("gpu:nvidia:a100:1:extra", "build.accelerator", "type[:vendor[:model[:count]]]"),
        ({"type": "gpu", "count": True}, "build.accelerator.count", "boolean"),
        ({"type": "gpu", "count": 1.5}, "build.accelerator.count", "1.5"),
        ({"type": "gpu", "shares": 0}, "build.accelerator.shares", "> 0"),
        ({"type": "gpu", "model": "a 100"}, "build.accelerator.model", "'a 100'"),
        ({"vendor": "nvidia"}, "build.accelerator.type", "required"),
        ({"type": "gpu", "cores": 2}, "build.accelerator.cores", "unknown key"),
        (5, "build.accelerator", "got an integer 5"),
    ],
)
def test_accelerator_rejections(given, path, fragment):
    problem = single_problem(with_changes(build__accelerator=given))
    assert problem.startswith(f"{path}: ")
    assert fragment in problem


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("biuld: {}\n", "biuld: unknown key; did you mean 'build'?"),
        ("build:\n  architechture: x86\n", "build.architechture: unknown key; did you mean 'architecture'?"),
        ("deploy:\n  entrypiont: [run.sh]\n", "deploy.entrypiont: unknown key; did you mean 'entrypoint'?"),
        (
            "deploy:\n  network:\n    service_host_prot: 80\n",
            "deploy.network.service_host_prot: unknown key; did you mean 'service_host_port'?",
        ),
        ("deploy:\n  resources:\n    gpus: 1\n", "deploy.resources.gpus: unknown key; did you mean 'gpu'?"),
        (
            "build:\n  components:\n    custom_packages:\n      pypy: [x]\n",
            "build.components.custom_packages.pypy: unknown key; did you mean 'pypi'?",
        ),
    ],
)
def test_typo_keys_name_the_key_and_suggest(text, expected):
    data = base_spec()
    for section, values in yaml.safe_load(text).items():
        data.setdefault(section, {})
        merge_into(data[section], values)
    assert expected in problems_of(yaml.safe_dump(data))


def merge_into(target: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_into(target[key], value)
        else:
            target[key] = value


def test_unknown_key_without_close_match_lists_the_keys():
    problem = single_problem(with_changes(deploy__readiness={"zzz": 1}))
    assert problem == "deploy.readiness.zzz: unknown key; expected one of: check, path, timeout_seconds, interval_seconds"


def test_all_problems_are_collected():
    problems = problems_of(
        with_changes(
            deploy__type="dockr",
            deploy__entrypiont=["x"],
            build__os="Ubuntu 20",
            deploy__network={"service_host_port": 0},
        )
    )
    paths = {problem.split(": ", 1)[0] for problem in problems}
    assert paths == {"deploy.type", "deploy.entrypiont", "build.os", "deploy.network.service_host_port"}
    assert not any("pydantic.dev" in problem or "Value error" in problem for problem in problems)


# --------------------------------------------------------------------------- field rejections


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"deploy__network": {"service_host_port": 0}},
            "deploy.network.service_host_port: 0 is not a port (1–65535)",
        ),
        (
            {"deploy__network": {"service_host_port": 70000}},
            "deploy.network.service_host_port: 70000 is not a port (1–65535)",
        ),
        (
            {"deploy__network": {"service_container_port": True}},
            "deploy.network.service_container_port: must be a port number (1–65535), got a boolean true",
        ),
        (
            {"deploy__network": {"service_host_port": "80"}},
            "deploy.network.service_host_port: must be a port number (1–65535), got a string '80'",
        ),
        (
            {"deploy__network": {"service_host_ip": "1.2.3"}},
            "deploy.network.service_host_ip: '1.2.3' is not an IP address",
        ),
        ({"deploy__resources": {"cpu": -1}}, "deploy.resources.cpu: must be a number > 0 and <= 512, got -1"),
        ({"deploy__resources": {"cpu": 1000}}, "deploy.resources.cpu: must be a number > 0 and <= 512, got 1000"),
        ({"deploy__resources": {"memory": -512}}, "deploy.resources.memory: must be an integer > 0, got -512"),
        (
            {"deploy__resources": {"memory": True}},
            "deploy.resources.memory: must be an integer > 0, got a boolean true",
        ),
        (
            {"deploy__resources": {"atom-max.device": 0}},
            "deploy.resources.atom-max.device: must be a number > 0, got 0",
        ),
        ({"deploy__replicas": 0}, "deploy.replicas: must be an integer from 1 to 100, got 0"),
        (
            {"deploy__readiness": {"timeout_seconds": 0}},
            "deploy.readiness.timeout_seconds: must be an integer from 1 to 3600, got 0",
        ),
    ],
)
def test_number_rejections(changes, expected):
    assert single_problem(with_changes(**changes)) == expected


def test_vendor_resource_keys_are_kept():
    resources = {"cpu": 2, "atom.device": 2}
    spec = parse_spec_text(with_changes(deploy__resources=resources))
    assert spec.deploy.resources.extra == {"atom.device": 2}
    assert spec.deploy.resources.cpu == 2


@pytest.mark.parametrize("package", ["vim;ls", "vim curl", "$(x)", "Vim", "-o", "vim=1.0;ls"])
def test_apt_package_rejections(package):
    problem = single_problem(with_changes(build__components={"custom_packages": {"apt": ["vim", package]}}))
    assert problem.startswith("build.components.custom_packages.apt[1]: ")
    assert repr(package) in problem


def test_apt_package_with_version_is_accepted():
    spec = parse_spec_text(with_changes(build__components={"custom_packages": {"apt": ["libssl3=3.0.2-0ubuntu1.10"]}}))
    assert spec.build.components.custom_packages.apt == ["libssl3=3.0.2-0ubuntu1.10"]


@pytest.mark.parametrize(
    ("requirement", "fragment"),
    [
        ("flask; rm -rf /", "not a valid PEP 508 requirement"),
        ("flask && curl evil.sh | sh", "not a valid PEP 508 requirement"),
        ("$(reboot)", "not a valid PEP 508 requirement"),
        ("--index-url=http://evil", "not a valid PEP 508 requirement"),
        ("evil @ https://example.com/evil.whl", "direct URL reference"),
        ("flask\nrequests", "line break"),
        ("x" * 201, "longer than 200"),
        ("python>=3.9", "python==X.Y"),
    ],
)
def test_lib_rejections(requirement, fragment):
    problem = single_problem(with_changes(build__components={"libs": ["torch", requirement]}))
    assert problem.startswith("build.components.libs[1]: ")
    assert fragment in problem


def test_python_pin_rejected_in_pypi_and_twice_in_libs():
    problem = single_problem(with_changes(build__components={"custom_packages": {"pypi": ["python==3.11"]}}))
    assert problem.startswith("build.components.custom_packages.pypi[0]: ")
    problem = single_problem(with_changes(build__components={"libs": ["python==3.9", "python==3.11"]}))
    assert problem.startswith("build.components.libs: ")


def test_pip_requirements_normalised_and_deduplicated():
    components = {
        "libs": ["python==3.11.4", "Torch >= 1.1.0", "numpy"],
        "custom_packages": {"pypi": ["torch>=1.1.0", "requests[socks]>=2; python_version > '3'"]},
    }
    spec = parse_spec_text(with_changes(build__components=components))
    assert spec.build.components.python_version == "3.11.4"
    assert spec.build.components.pip_requirements == [
        "Torch>=1.1.0",
        "numpy",
        "torch>=1.1.0",
        'requests[socks]>=2; python_version > "3"',
    ]


@pytest.mark.parametrize(
    ("entrypoint", "path", "fragment"),
    [
        (["run.sh", "a\nb"], "deploy.entrypoint[1]", "line break"),
        (["run.sh", "a\rb"], "deploy.entrypoint[1]", "line break"),
        (["run.sh", "a\x00b"], "deploy.entrypoint[1]", "NUL"),
        (["run.sh", "x" * 4097], "deploy.entrypoint[1]", "longer than 4096"),
        (["run.sh", True], "deploy.entrypoint[1]", "boolean"),
        (["run.sh", None], "deploy.entrypoint[1]", "null"),
        (["", "x"], "deploy.entrypoint", "first argument"),
        ([], "deploy.entrypoint", "empty"),
        ("run.sh", "deploy.entrypoint", "list of arguments"),
    ],
)
def test_entrypoint_rejections(entrypoint, path, fragment):
    problem = single_problem(with_changes(deploy__entrypoint=entrypoint))
    assert problem.startswith(f"{path}: ")
    assert fragment in problem


def test_entrypoint_and_pre_exec_convert_scalars():
    spec = parse_spec_text(
        with_changes(
            deploy__entrypoint=["serve", "--port", 8080],
            deploy__pre_exec=[["convert.py", 1, 0.5], "hello.py"],
        )
    )
    assert spec.deploy.entrypoint == ["serve", "--port", "8080"]
    assert spec.deploy.pre_exec == [["convert.py", "1", "0.5"], ["hello.py"]]


def test_pre_exec_rejections():
    problems = problems_of(with_changes(deploy__pre_exec=[["ok"], [], [""], 7, ["x", "a\nb"]]))
    assert problems == [
        "deploy.pre_exec[1]: must not be an empty list",
        "deploy.pre_exec[2]: the first argument (the program to run) must not be empty",
        "deploy.pre_exec[3]: must be a list of arguments such as [run.sh, --port, '8080'], got an integer 7",
        "deploy.pre_exec[4][1]: 'a\\nb' contains a line break",
    ]


@pytest.mark.parametrize(
    ("work_dir", "fragment"),
    [
        ("workspace", "must be an absolute path"),
        ("/workspace/../etc", "'..'"),
        ("/workspace/./x", "'.'"),
        ("/work space", "characters other than"),
        ("/workspace/", "empty"),
        ("/$(id)", "characters other than"),
        ("/" + "a" * 255, "longer than 255"),
    ],
)
def test_work_dir_rejections(work_dir, fragment):
    problem = single_problem(with_changes(deploy__work_dir=work_dir))
    assert problem.startswith("deploy.work_dir: ")
    assert fragment in problem


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("nn_file", "../x", "'..'"),
        ("weight_file", "/etc/passwd", "must be relative"),
        ("annotation_file", "a\\b", "characters other than"),
        ("nn_file", "models/../../x", "'..'"),
        ("nn_file", "a\x00b", "characters other than"),
    ],
)
def test_optional_file_rejections(field, value, fragment):
    problem = single_problem(with_changes(**{f"optional__{field}": value}))
    assert problem.startswith(f"optional.{field}: ")
    assert fragment in problem


def test_optional_file_with_subdirectory_and_space_is_accepted():
    spec = parse_spec_text(with_changes(optional__nn_file="models/my net.py"))
    assert spec.optional.nn_file == "models/my net.py"


@pytest.mark.parametrize("name", ["a/b", "x" * 200, "-svc", "svc-", "a..b", "a b", "$(id)"])
def test_service_name_rejections(name):
    problem = single_problem(with_changes(deploy__service_name=name))
    assert problem.startswith("deploy.service_name: ")
    assert "not a valid service name" in problem


@pytest.mark.parametrize(
    "image",
    [
        "us-docker.pkg.dev/CloudRun/hello:latest",
        "MyUser/app",
        "hello world",
        "hello:latest; rm -rf /",
        "hello@sha256:abc",
        "hello:" + "t" * 129,
        "registry.example.com/" + "a" * 250,
    ],
)
def test_image_uri_rejections(image):
    problem = single_problem(with_changes(build__image_uri=image))
    assert problem.startswith("build.image_uri: ")
    assert "not a valid Docker image reference" in problem


@pytest.mark.parametrize(
    "image",
    [
        "hello",
        "library/hello-world:1.0",
        "localhost:5000/team/app_name__x:v1.2-rc",
        "Registry.Example.com/a/b",
        "ghcr.io/org/app@sha256:" + "0" * 64,
    ],
)
def test_image_uri_accepted(image):
    assert parse_spec_text(with_changes(build__image_uri=image)).build.image_uri == image


def test_unknown_deploy_type_suggests_the_closest():
    problem = single_problem(with_changes(deploy__type="dockr"))
    assert problem.startswith("deploy.type: 'dockr' is not a known deploy type; did you mean 'docker'?")


@pytest.mark.parametrize(
    ("env", "path", "fragment"),
    [
        ({"MY-VAR": "x"}, "deploy.env.MY-VAR", "not a valid environment variable name"),
        ({"1ST": "x"}, "deploy.env.1ST", "not a valid environment variable name"),
        ({"OK": "a\nb"}, "deploy.env.OK", "line break"),
        ({"OK": True}, "deploy.env.OK", "boolean"),
    ],
)
def test_env_rejections(env, path, fragment):
    problem = single_problem(with_changes(deploy__env=env))
    assert problem.startswith(f"{path}: ")
    assert fragment in problem


def test_env_numbers_become_strings():
    spec = parse_spec_text(with_changes(deploy__env={"PORT": 8080, "RATIO": 0.5, "NAME": "x"}))
    assert spec.deploy.env == {"PORT": "8080", "RATIO": "0.5", "NAME": "x"}


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"build__architecture": "sparc"}, "build.architecture"),
        ({"build__os": "Ubuntu 20.04"}, "build.os"),
        ({"build__os": 20.04}, "build.os"),
        ({"build__components": {"engine": "Py Torch"}}, "build.components.engine"),
        ({"deploy__k8s": {"nfsip": "192.168.0.999"}}, "deploy.k8s.nfsip"),
        ({"deploy__k8s": {"nfspath": "data"}}, "deploy.k8s.nfspath"),
        ({"deploy__readiness": {"check": "grpc"}}, "deploy.readiness.check"),
        ({"deploy__readiness": {"path": "health"}}, "deploy.readiness.path"),
        ({"deploy__model_service": {"model": "a b"}}, "deploy.model_service.model"),
        ({"deploy__model_service": {"runtime_variant": "triton"}}, "deploy.model_service.runtime_variant"),
        ({"deploy__network": [8080]}, "deploy.network"),
    ],
)
def test_other_field_rejections_name_the_field(changes, path):
    assert single_problem(with_changes(**changes)).startswith(f"{path}: ")


def test_k8s_nfsip_accepts_hostname():
    k8s = {"nfsip": "nfs.internal.example", "nfspath": "/exports"}
    assert parse_spec_text(with_changes(deploy__k8s=k8s)).deploy.k8s.nfsip == "nfs.internal.example"


# --------------------------------------------------------------------------- YAML safety

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_alias_bomb_is_refused_quickly():
    started = time.perf_counter()
    problem = single_problem(BILLION_LAUGHS)
    assert time.perf_counter() - started < 1.0
    assert "aliases" in problem
    assert problem.startswith("deployment.yaml: line 1")


def test_plain_alias_is_refused():
    text = LOCALDOCKER.read_text().replace("service_name: hello", "service_name: &n hello\n  name: *n")
    assert "aliases" in single_problem(text)


def test_document_over_the_size_cap_is_refused(tmp_path):
    oversized = "# padding\n" * (MAX_SPEC_BYTES // 10 + 1) + LOCALDOCKER.read_text()
    assert single_problem(oversized) == f"deployment.yaml: larger than {MAX_SPEC_BYTES} bytes"
    assert single_problem(oversized.encode()) == f"deployment.yaml: larger than {MAX_SPEC_BYTES} bytes"
    path = tmp_path / "deployment.yaml"
    path.write_text(oversized)
    with pytest.raises(SpecError, match="larger than"):
        load_spec(path)


@pytest.mark.parametrize("text", ["- build\n- deploy\n", "just a string\n", "42\n"])
def test_non_mapping_top_level_is_refused(text):
    assert "top level must be a mapping" in single_problem(text)


def test_empty_document_is_refused():
    assert "empty" in single_problem("# nothing here\n")


def test_multiple_documents_are_refused():
    text = LOCALDOCKER.read_text() + "---\n" + LOCALDOCKER.read_text()
    assert "more than one YAML document" in single_problem(text)


def test_syntax_error_reports_line_and_column():
    text = "build:\n  architecture: x86\ndeploy:\n  entrypoint: [run.sh, -p\n  type: docker\n"
    problem = single_problem(text)
    assert problem.startswith("deployment.yaml: line 5, column ")


def test_duplicate_and_non_string_keys_are_refused():
    assert "duplicate key 'build'" in single_problem("build: {}\nbuild: {}\n")
    assert "keys must be strings" in single_problem("build: {}\ndeploy: {}\nyes: 1\n")


def test_python_tags_are_refused():
    problem = single_problem("build: !!python/object/apply:os.system ['echo hi']\n")
    assert problem.startswith("deployment.yaml: line 1")


def test_deep_nesting_is_refused():
    """Refused with the line it starts on, whoever words it: libyaml (PyYAML >= 6.0.4 bundles one with
    its own depth limit) refuses 5,000 levels before our own check sees them."""
    problem = single_problem("build: " + "[" * 5000 + "]" * 5000 + "\n")
    assert problem.startswith("deployment.yaml: line 1") and "nest" in problem, problem


def test_nesting_past_our_limit_is_refused_in_our_words():
    assert "nested more than 32 levels deep" in single_problem("build: " + "[" * 40 + "]" * 40 + "\n")


def test_source_name_is_used_in_messages():
    with pytest.raises(SpecError, match=r"^custom\.yaml: the top level"):
        parse_spec_text("[]", source="custom.yaml")


# --------------------------------------------------------------------------- load_spec / SpecError


def test_load_spec_missing_file(tmp_path):
    missing = tmp_path / "deployment.yaml"
    with pytest.raises(SpecError) as caught:
        load_spec(missing)
    assert caught.value.problems == [f"{missing}: not found"]


def test_spec_error_survives_pickling():
    error = SpecError(["a: one", "b: two"])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == ["a: one", "b: two"]
    assert str(copy) == "a: one\nb: two"
    assert isinstance(copy, ValueError)


# --------------------------------------------------------------------------- project files


@pytest.fixture
def project(tmp_path) -> pathlib.Path:
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    for name in ("abc.py", "abc.pt", "coco.dat"):
        (project_dir / name).write_text(name)
    return project_dir


def sample_with_files(**files) -> DeploymentSpec:
    return parse_spec_text(with_changes(**{f"optional__{field}": value for field, value in files.items()}))


def test_check_project_files_resolves_present_files(project):
    found = check_project_files(load_spec(LOCALDOCKER), project)
    assert found == {
        "optional.nn_file": (project / "abc.py").resolve(),
        "optional.weight_file": (project / "abc.pt").resolve(),
        "optional.annotation_file": (project / "coco.dat").resolve(),
    }


def test_check_project_files_without_optional_section(project):
    assert check_project_files(load_spec(SAMPLES_DIR / "deployment_rebellion_atom.yaml"), project) == {}


def test_check_project_files_symlink_inside_project_is_accepted(project):
    (project / "weights").mkdir()
    (project / "weights" / "real.pt").write_text("w")
    (project / "link.pt").symlink_to(project / "weights" / "real.pt")
    found = check_project_files(sample_with_files(weight_file="link.pt"), project)
    assert found["optional.weight_file"] == (project / "weights" / "real.pt").resolve()


def test_check_project_files_missing_file(project):
    (project / "abc.pt").unlink()
    with pytest.raises(SpecError) as caught:
        check_project_files(load_spec(LOCALDOCKER), project)
    assert caught.value.problems == ["optional.weight_file: 'abc.pt' not found in the project directory"]


def test_check_project_files_symlink_escaping_project(project, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (project / "escape.py").symlink_to(secret)
    with pytest.raises(SpecError) as caught:
        check_project_files(sample_with_files(nn_file="escape.py"), project)
    (problem,) = caught.value.problems
    assert problem == "optional.nn_file: 'escape.py' links outside the project directory"
    assert str(tmp_path) not in problem, "the server's paths stay out of messages"


def test_check_project_files_symlinked_directory_escaping_project(project, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "abc.pt").write_text("w")
    (project / "models").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SpecError, match=r"^optional\.weight_file: .*outside the project directory"):
        check_project_files(sample_with_files(weight_file="models/abc.pt"), project)


def test_check_project_files_directory_is_not_a_file(project):
    (project / "coco.dat").unlink()
    (project / "coco.dat").mkdir()
    with pytest.raises(SpecError) as caught:
        check_project_files(load_spec(LOCALDOCKER), project)
    assert caught.value.problems == ["optional.annotation_file: 'coco.dat' is not a regular file"]


def test_check_project_files_reports_every_problem(project, tmp_path):
    for name in ("abc.py", "abc.pt"):
        (project / name).unlink()
    (project / "abc.pt").symlink_to(tmp_path)
    with pytest.raises(SpecError) as caught:
        check_project_files(load_spec(LOCALDOCKER), project)
    fields = [problem.split(": ", 1)[0] for problem in caught.value.problems]
    assert fields == ["optional.nn_file", "optional.weight_file"]


# --------------------------------------------------------------------------- legacy forms TANGO writes


@pytest.mark.parametrize(
    ("written", "read"),
    [("linux/amd64", "amd64"), ("linux/arm64", "arm64"), ("linux/arm64/v8", "arm64"), ("Linux/AMD64", "amd64"),
     ("linux/x86_64", "x86_64"), ("linux/arm/v7", "arm"), ("amd64", "amd64")],
)
def test_docker_platforms_are_read_as_their_architecture(written, read):
    warnings: list[str] = []
    spec = parse_spec_text(with_changes(build__architecture=written), legacy_forms=warnings)
    assert spec.build.architecture == read
    assert warnings == [], "a platform is a spelling of the architecture, not a mistake"
    assert DeploymentSpec.model_validate(spec.to_dict()).build.architecture == read


@pytest.mark.parametrize(
    ("written", "fragment"),
    [("linux/386", "'386' is not a known architecture"), ("windows/amd64", "images are built for linux only"),
     ("linux/arm64/8", "is not a platform"), ("linux/", "is not a known architecture"),
     ("linux/amd64/v8/x", "is not a platform"), (64, "must be an architecture such as x86")],
)
def test_bad_platforms_are_errors_naming_the_field(written, fragment):
    problem = single_problem(with_changes(build__architecture=written))
    assert problem.startswith("build.architecture: ") and fragment in problem, problem


@pytest.mark.parametrize(
    ("given", "count"),
    [("cuda", 1), ("CUDA", 1), ("cuda:nvidia:a100:2", 2), ({"type": "cuda", "count": 4}, 4),
     ({"type": "cuda", "vendor": "nvidia"}, 1)],
)
def test_cuda_is_read_as_an_nvidia_gpu(given, count):
    warnings: list[str] = []
    spec = parse_spec_text(with_changes(build__accelerator=given), legacy_forms=warnings)
    accelerator = spec.build.accelerator
    assert (accelerator.type, accelerator.vendor, accelerator.count) == ("gpu", "nvidia", count)
    assert spec.accelerator_request.effective_vendor == "nvidia"
    assert warnings == []


@pytest.mark.parametrize("given", ["cuda:amd", {"type": "cuda", "vendor": "rebellion"}])
def test_cuda_with_another_vendor_is_an_error(given):
    problem = single_problem(with_changes(build__accelerator=given))
    assert problem.startswith("build.accelerator: ") and "means a nvidia gpu" in problem, problem


def test_atp_is_read_as_apt_with_a_warning():
    warnings: list[str] = []
    packages = {"atp": ["vim", "hello"], "pypi": ["flask==1.2.3"]}
    spec = parse_spec_text(with_changes(build__components__custom_packages=packages), legacy_forms=warnings)
    assert spec.build.components.custom_packages.apt == ["vim", "hello"]
    assert warnings == [
        "build.components.custom_packages.atp: read as 'apt' (TANGO's code generator misspells the key); "
        "rename it to 'apt'"
    ]
    assert "atp" not in spec.to_dict()["build"]["components"]["custom_packages"], "stored in its right name"


def test_atp_without_a_collector_still_validates_and_apt_alone_warns_nothing():
    packages = {"atp": ["vim"]}
    assert parse_spec_text(with_changes(build__components__custom_packages=packages)).build.components \
        .custom_packages.apt == ["vim"]
    warnings: list[str] = []
    load_spec(LOCALDOCKER, legacy_forms=warnings)
    assert warnings == []


def test_atp_and_apt_together_are_the_same_setting_given_twice():
    packages = {"atp": ["vim"], "apt": ["hello"]}
    assert single_problem(with_changes(build__components__custom_packages=packages)) == (
        "build.components.custom_packages.atp: 'atp' and 'apt' are the same setting; give only 'apt'"
    )


def test_atp_packages_are_held_to_the_apt_grammar():
    problem = single_problem(with_changes(build__components__custom_packages={"atp": ["vim;ls"]}))
    assert problem.startswith("build.components.custom_packages.atp[0]: ") and "Debian package name" in problem


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"build__platform": "linux/amd64"}, "build.platform: unknown key"),
        ({"build__components__custom_packages": {"apk": ["vim"]}}, "build.components.custom_packages.apk: unknown key"),
        ({"deploy__network": {"service_host_ip": "1.2.3.4", "service_host_address": "x"}},
         "deploy.network.service_host_address: unknown key"),
    ],
)
def test_unknown_keys_next_to_the_legacy_forms_stay_errors(changes, expected):
    assert single_problem(with_changes(**changes)).startswith(expected)


def test_a_tango_generated_file_validates_with_one_warning(tmp_path):
    text = LOCALDOCKER.read_text().replace("architecture: x86", "architecture: linux/amd64")
    text = text.replace("accelerator: cpu", "accelerator: cuda").replace("      apt:\n", "      atp:\n")
    (tmp_path / "deployment.yaml").write_text(text)
    warnings: list[str] = []
    spec = load_spec(tmp_path / "deployment.yaml", legacy_forms=warnings)
    assert (spec.build.architecture, spec.build.accelerator.type, spec.build.accelerator.vendor) == (
        "amd64", "gpu", "nvidia")
    assert spec.build.components.custom_packages.apt == ["vim", "hello"]
    assert spec.deploy.network.service_host_ip == "1.2.3.4"
    assert [warning.split(":")[0] for warning in warnings] == ["build.components.custom_packages.atp"]


def test_load_spec_names_the_file_as_the_caller_shows_it(tmp_path):
    (tmp_path / "deployment.yaml").write_text("build: [\n")
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "deployment.yaml", source="common/u1/p/deployment.yaml")
    assert str(caught.value).startswith("common/u1/p/deployment.yaml: line ")
    assert str(tmp_path) not in str(caught.value)
