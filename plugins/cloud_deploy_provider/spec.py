"""Models and a safe loader for TANGO's ``deployment.yaml``.

The models accept TANGO's published samples unchanged, while every value that
later reaches a Dockerfile, a command line, a file path or a resource name is
held to a strict grammar. Every problem is reported at once, as
``dotted.path: message``, in a :class:`SpecError`.

Core layer: no airflow or docker imports.
"""

import difflib
import ipaddress
import math
import pathlib
import re
import types
import typing
from collections.abc import Iterable
from functools import partial
from typing import Annotated, Any, Literal

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from cloud_deploy_provider.accelerators import TYPE_ALIASES, AcceleratorError, AcceleratorRequest, request_of
from cloud_deploy_provider.errors import UserError
from cloud_deploy_provider.jobs import JOB_RUNNERS, JOB_TARGETS
from cloud_deploy_provider.targets import TARGET_TYPES

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

MAX_SPEC_BYTES = 256 * 1024
MAX_YAML_DEPTH = 32
KNOWN_DEPLOY_TYPES = TARGET_TYPES
ARCHITECTURES = ("x86", "x86_64", "amd64", "arm", "arm64", "aarch64")
PLATFORM_OS = "linux"
AcceleratorType = Literal["cpu", "gpu", "npu", "tpu"]
AcceleratorVendor = Literal["nvidia", "amd", "rebellion", "google", "intel"]
ReadinessCheck = Literal["http", "tcp"]
DEFAULT_SOURCE = "deployment.yaml"
ATP_WARNING = (
    "build.components.custom_packages.atp: read as 'apt' (TANGO's code generator misspells the key); "
    "rename it to 'apt'"
)


class SpecError(UserError):
    """Every problem found, each as 'dotted.path: message a user can act on'."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __reduce__(self):
        return type(self), (self.problems,)


# --------------------------------------------------------------------------- grammars

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}", re.ASCII)
_OS = re.compile(r"[a-z]+(?:[0-9][0-9.]*)?", re.ASCII)
_PLATFORM_VARIANT = re.compile(r"v[0-9]+", re.ASCII)
_SERVICE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", re.ASCII)
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
_APT_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+)?", re.ASCII)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_VENDOR_RESOURCE_KEY = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.ASCII)
_HTTP_PATH = re.compile(r"/[A-Za-z0-9._~/?=&%+-]*", re.ASCII)
_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
_PYTHON_VERSION = re.compile(r"[0-9]+\.[0-9]+(?:\.[0-9]+)?", re.ASCII)
_ABSOLUTE_PATH_PART = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
_RELATIVE_PATH_PART = re.compile(r"[A-Za-z0-9._ -]+", re.ASCII)
_SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8,17}", re.ASCII)
_SECURITY_GROUP_ID = re.compile(r"sg-[0-9a-f]{8,17}", re.ASCII)
_IAM_ROLE_ARN = re.compile(r"arn:aws[a-z-]{0,10}:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}", re.ASCII)
_AWS_RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", re.ASCII)
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?:/[A-Za-z0-9!_.*'()/-]{0,1000})?", re.ASCII)
_TARGET_GROUP_ARN = re.compile(
    r"arn:aws[a-z-]{0,10}:elasticloadbalancing:[a-z0-9-]{1,30}:[0-9]{12}:targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}",
    re.ASCII,
)
_SAGEMAKER_INSTANCE_TYPE = re.compile(r"ml\.[a-z0-9]+\.[a-z0-9]+", re.ASCII)
_AGENT_ADDRESS = re.compile(r"(https?)://([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?/?", re.ASCII)
_GCP_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", re.ASCII)
_GCP_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}", re.ASCII)
_GCP_SERVICE_ACCOUNT = re.compile(
    r"[a-z0-9][a-z0-9-]{0,62}@(?:[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam|developer|appspot)\.gserviceaccount\.com", re.ASCII
)
_GCP_REPOSITORY_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_K8S_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_K8S_PORT_NAME = re.compile(r"(?=.*[a-z])[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?", re.ASCII)
_K8S_QUANTITY = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?", re.ASCII)
_DNS_NAME = re.compile(r"(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)

# Docker image reference, per github.com/distribution/reference (regexp.go).
_IMAGE_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IMAGE_HOST = rf"(?:{_IMAGE_DOMAIN_PART}(?:\.{_IMAGE_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_IMAGE_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REFERENCE = re.compile(
    rf"(?:{_IMAGE_HOST}/)?{_IMAGE_PATH_PART}(?:/{_IMAGE_PATH_PART})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?",
    re.ASCII,
)
MAX_IMAGE_REFERENCE = 255
MAX_PATH = 255
MAX_ARG = 4096
MAX_REQUIREMENT = 200
MAX_HTTP_PATH = 512


# --------------------------------------------------------------------------- value checks


def _fail(message: str) -> typing.NoReturn:
    raise PydanticCustomError("spec", message)


def _show(value: Any) -> str:
    """A short, YAML-flavoured rendering of a user value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    kinds = [
        (type(None), "null"),
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
    ]
    return next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)


def _described(value: Any) -> str:
    return "null" if value is None else f"{_kind(value)} {_show(value)}"


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(candidates), n=1)
    return f"did you mean {matches[0]!r}?" if matches else ""


def _require_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        _fail(f"must be {what}, got {_described(value)}")
    return value


def _grammar(pattern: re.Pattern[str], what: str, *, max_len: int | None = None, lower: bool = False):
    def check(value: Any) -> str:
        text = _require_str(value, what)
        if lower:
            text = text.lower()
        if (max_len is not None and len(text) > max_len) or not pattern.fullmatch(text):
            _fail(f"{_show(value)} is not {what}")
        return text

    return BeforeValidator(check)


def _one_of(choices: tuple[str, ...], what: str):
    def check(value: Any) -> str:
        text = _require_str(value, f"a {what}").lower()
        if text not in choices:
            hint = _did_you_mean(text, choices)
            known = f"expected one of: {', '.join(choices)}"
            _fail(f"{_show(value)} is not a known {what}; {hint + ' ' if hint else ''}{known}")
        return text

    return BeforeValidator(check)


def _architecture(value: Any) -> str:
    """An architecture name, or a Docker platform (``linux/amd64``, ``linux/arm64/v8``) read as its architecture.

    TANGO's code generator writes the platform form; the variant says nothing the build uses.
    """
    text = _require_str(value, "an architecture such as x86 or a platform such as linux/amd64").lower()
    if "/" not in text:
        return _known_architecture(text, value)
    os_name, _, rest = text.partition("/")
    architecture, _, variant = rest.partition("/")
    if os_name != PLATFORM_OS:
        _fail(f"{_show(value)}: images are built for {PLATFORM_OS} only; write e.g. linux/amd64 or linux/arm64")
    if variant and not _PLATFORM_VARIANT.fullmatch(variant):
        _fail(f"{_show(value)} is not a platform; write os/architecture[/variant], e.g. linux/arm64/v8")
    if architecture not in ARCHITECTURES:
        _fail(f"{_show(value)}: {architecture!r} is not a known architecture; "
              f"expected linux/ and one of: {', '.join(ARCHITECTURES)}")
    return architecture


def _known_architecture(text: str, value: Any) -> str:
    if text not in ARCHITECTURES:
        hint = _did_you_mean(text, ARCHITECTURES)
        _fail(f"{_show(value)} is not a known architecture; {hint + ' ' if hint else ''}"
              f"expected one of: {', '.join(ARCHITECTURES)} (or a platform such as linux/amd64)")
    return text


def _note_legacy_form(info: ValidationInfo, message: str) -> None:
    """Record a legacy form read, in the ``legacy_forms`` list the caller passed as validation context."""
    forms = (info.context or {}).get("legacy_forms")
    if forms is not None:
        forms.append(message)


def _describe_range(integer: bool, low: float | None, high: float | None, above: float | None) -> str:
    noun = "an integer" if integer else "a number"
    if above is None and low is not None and high is not None:
        return f"{noun} from {low} to {high}"
    bounds = [
        f"{sign} {limit}" for sign, limit in ((">", above), (">=", low), ("<=", high)) if limit is not None
    ]
    return " ".join([noun, " and ".join(bounds)]) if bounds else noun


def _ranged(*, integer: bool, low: float | None = None, high: float | None = None, above: float | None = None):
    """A number check that refuses booleans (YAML ``yes``) and non-numbers."""
    description = _describe_range(integer, low, high, above)
    accepted = int if integer else (int, float)

    def check(value: Any) -> Any:
        not_finite = isinstance(value, float) and not math.isfinite(value)
        if isinstance(value, bool) or not isinstance(value, accepted) or not_finite:
            _fail(f"must be {description}, got {_described(value)}")
        too_low = (above is not None and value <= above) or (low is not None and value < low)
        if too_low or (high is not None and value > high):
            _fail(f"must be {description}, got {value}")
        return value

    return BeforeValidator(check)


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"must be a port number (1–65535), got {_described(value)}")
    if not 1 <= value <= 65535:
        _fail(f"{value} is not a port (1–65535)")
    return value


def _single_line(value: Any, what: str, *, max_len: int | None = None) -> str:
    """A scalar as text; ints and floats become strings, other types are refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        _fail(f"must be {what}, got {_described(value)}; put it in quotes")
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        _fail(f"{_show(text)} contains a NUL character")
    if "\n" in text or "\r" in text:
        _fail(f"{_show(text)} contains a line break")
    if max_len is not None and len(text) > max_len:
        _fail(f"{_show(text)} is longer than {max_len} characters")
    return text


def _arg_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        _fail(f"must be a list of arguments such as [run.sh, --port, '8080'], got {_described(value)}")
    if not value:
        _fail("must not be an empty list")
    return value


def _command(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else _arg_list(value)


def _program_named(args: list[str]) -> list[str]:
    if not args[0]:
        _fail("the first argument (the program to run) must not be empty")
    return args


def _path_problem(text: str, *, absolute: bool) -> str | None:
    if len(text) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    if absolute != text.startswith("/"):
        return "must be an absolute path (start with '/')" if absolute else "must be relative to the project directory"
    part_grammar = _ABSOLUTE_PATH_PART if absolute else _RELATIVE_PATH_PART
    allowed = "letters, digits, '.', '_', '-'" + ("" if absolute else ", ' '")
    for part in text.split("/")[1:] if absolute else text.split("/"):
        if part in ("", ".", ".."):
            return "must not contain empty, '.' or '..' path components"
        if not part_grammar.fullmatch(part):
            return f"has a path component {part!r} with characters other than {allowed}"
    return None


def _posix_path(value: Any, *, absolute: bool) -> str:
    what = "an absolute path" if absolute else "a path relative to the project directory"
    text = _require_str(value, what)
    problem = _path_problem(text, absolute=absolute)
    if problem:
        _fail(f"{_show(value)} {problem}")
    return text


def _service_name(value: Any) -> str:
    text = _require_str(value, "a service name")
    if not _SERVICE_NAME.fullmatch(text) or ".." in text:
        _fail(
            f"{_show(value)} is not a valid service name (1–63 letters, digits, '.', '_', '-', "
            "starting and ending with a letter or digit, no '..')"
        )
    return text


def _names_registry(component: str) -> bool:
    """Docker's rule: a leading component is a registry host only if it looks like one."""
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


def _image_reference(value: Any) -> str:
    text = _require_str(value, "a Docker image reference")
    first, has_more, _ = text.partition("/")
    lowercase_first = not has_more or _names_registry(first) or first == first.lower()
    if len(text) > MAX_IMAGE_REFERENCE or not lowercase_first or not _IMAGE_REFERENCE.fullmatch(text):
        _fail(
            f"{_show(value)} is not a valid Docker image reference "
            "([host[:port]/]lowercase/path[:tag][@sha256:digest], e.g. registry.example.com:5000/team/app:1.0)"
        )
    return text


def _ip_address(value: Any) -> str:
    text = _require_str(value, "an IP address")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        _fail(f"{_show(value)} is not an IP address")


def _host(value: Any) -> str:
    text = _require_str(value, "an IP address or host name")
    if not _valid_host(text):
        _fail(f"{_show(value)} is not an IP address or host name")
    return str(ipaddress.ip_address(text)) if _is_ip(text) else text


def _agent_address(value: Any) -> str:
    """``http(s)://host[:port]`` with nothing after it: paths are the agent's, not the spec's."""
    text = _require_str(value, "an agent address such as http://10.0.0.5:8080")
    match = _AGENT_ADDRESS.fullmatch(text)
    port = int(match.group(3)) if match and match.group(3) else None
    if not match or not _valid_host(match.group(2)) or port == 0 or (port or 0) > 65535:
        _fail(f"{_show(value)} is not an agent address (http(s)://host[:port], e.g. http://10.0.0.5:8080)")
    return text.rstrip("/")


def _valid_host(text: str) -> bool:
    if _is_ip(text):
        return True
    labels = text.split(".")
    return len(text) <= 253 and not labels[-1].isdigit() and all(_HOSTNAME_LABEL.fullmatch(label) for label in labels)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _is_python(requirement: Requirement) -> bool:
    return canonicalize_name(requirement.name) == "python"


def _requirement(value: Any, *, allow_python: bool) -> str:
    text = _require_str(value, "a PEP 508 requirement such as 'torch>=1.1.0'")
    if len(text) > MAX_REQUIREMENT:
        _fail(f"{_show(text)} is longer than {MAX_REQUIREMENT} characters")
    if any(char in text for char in "\x00\r\n"):
        _fail(f"{_show(text)} contains a line break or NUL character")
    if "@" in text:
        _fail(f"{_show(text)} is a direct URL reference; only index requirements like 'name>=1.0' are allowed")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        _fail(f"{_show(text)} is not a valid PEP 508 requirement ({str(exc).splitlines()[0]})")
    if _is_python(requirement):
        _check_python_pin(requirement, text, allow_python=allow_python)
    return text


def _check_python_pin(requirement: Requirement, text: str, *, allow_python: bool) -> None:
    if not allow_python:
        _fail(f"{_show(text)}: python is not a pip package; pin it in build.components.libs as python==3.11")
    specifiers = list(requirement.specifier)
    exact = len(specifiers) == 1 and specifiers[0].operator == "=="
    if requirement.extras or requirement.marker or not exact or not _PYTHON_VERSION.fullmatch(specifiers[0].version):
        _fail(f"{_show(text)}: the Python version must be written as python==X.Y or python==X.Y.Z")


def _python_pin_of(text: str) -> str | None:
    requirement = Requirement(text)
    return next(iter(requirement.specifier)).version if _is_python(requirement) else None


def _at_most_one_python_pin(libs: list[str]) -> list[str]:
    if sum(_python_pin_of(lib) is not None for lib in libs) > 1:
        _fail("python==X.Y is given more than once; keep one")
    return libs


def _vendor_resource_key(value: Any) -> str:
    text = _require_str(value, "a resource name")
    if not _VENDOR_RESOURCE_KEY.fullmatch(text):
        hint = _did_you_mean(text, Resources.model_fields)
        _fail(f"unknown key; {hint or 'expected cpu, memory, gpu or a vendor key such as atom-max.device'}")
    return text


def _enabled_disabled(value: Any) -> str:
    if isinstance(value, bool):
        return "ENABLED" if value else "DISABLED"
    text = _require_str(value, "ENABLED or DISABLED").upper()
    if text not in ("ENABLED", "DISABLED"):
        _fail(f"{_show(value)} must be ENABLED or DISABLED (or true/false)")
    return text


EnabledDisabled = Annotated[str, BeforeValidator(_enabled_disabled)]


def _accelerator_fields(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) > 4:
        _fail(f"{_show(text)} is not an accelerator; write type[:vendor[:model[:count]]], e.g. 'gpu:nvidia:a100:2'")
    fields = dict(zip(("type", "vendor", "model", "count"), parts))
    if re.fullmatch(r"-?[0-9]+", fields.get("count", ""), re.ASCII):
        fields["count"] = int(fields["count"])
    return {key: part for key, part in fields.items() if part != ""}


Port = Annotated[int, BeforeValidator(_port)]
Name = Annotated[str, _grammar(_NAME, "a name of lowercase letters, digits, '.', '_', '-' (up to 63)")]
ModelName = Annotated[str, _grammar(_MODEL_NAME, "a name of letters, digits, '.', '_', '-' (up to 128)")]
AbsolutePath = Annotated[str, BeforeValidator(partial(_posix_path, absolute=True))]
RelativePath = Annotated[str, BeforeValidator(partial(_posix_path, absolute=False))]
Arg = Annotated[str, BeforeValidator(partial(_single_line, what="an argument string", max_len=MAX_ARG))]
Command = Annotated[list[Arg], BeforeValidator(_command), AfterValidator(_program_named)]
ArgList = Annotated[list[Arg], BeforeValidator(_arg_list), AfterValidator(_program_named)]
EnvName = Annotated[
    str,
    _grammar(_ENV_NAME, "a valid environment variable name (letters, digits and '_', not starting with a digit)"),
]
EnvValue = Annotated[str, BeforeValidator(partial(_single_line, what="a string"))]
Lib = Annotated[str, BeforeValidator(partial(_requirement, allow_python=True))]
PypiPackage = Annotated[str, BeforeValidator(partial(_requirement, allow_python=False))]
AptPackage = Annotated[
    str,
    _grammar(_APT_PACKAGE, "a Debian package name (lowercase letters, digits, '+', '.', '-', optionally =version)"),
]
VendorResourceKey = Annotated[str, BeforeValidator(_vendor_resource_key)]
SubnetId = Annotated[str, _grammar(_SUBNET_ID, "a subnet id such as subnet-0abc1234")]
SecurityGroupId = Annotated[str, _grammar(_SECURITY_GROUP_ID, "a security group id such as sg-0abc1234")]
IamRoleArn = Annotated[str, _grammar(_IAM_ROLE_ARN, "an IAM role ARN such as arn:aws:iam::123456789012:role/name")]
AwsResourceName = Annotated[
    str, _grammar(_AWS_RESOURCE_NAME, "a name of letters, digits, '_' and '-' (up to 128, not starting with '_' or '-')")
]
S3Bucket = Annotated[str, _grammar(_S3_BUCKET, "an S3 bucket name (lowercase letters, digits, '.', '-')")]
S3Uri = Annotated[str, _grammar(_S3_URI, "an S3 URI such as s3://bucket/prefix")]
PositiveNumber = Annotated[int | float, _ranged(integer=False, above=0)]
GcpProjectId = Annotated[str, _grammar(_GCP_PROJECT_ID, "a Google Cloud project id (6-30 lowercase letters, digits, '-')")]
GcpRegion = Annotated[str, _grammar(_GCP_REGION, "a Google Cloud region such as asia-northeast3")]
GcpServiceAccount = Annotated[
    str, _grammar(_GCP_SERVICE_ACCOUNT, "a service account e-mail (name@project.iam.gserviceaccount.com)")
]
K8sName = Annotated[str, _grammar(_K8S_NAME, "a Kubernetes name (lowercase letters, digits, '-', up to 63)")]
K8sPortName = Annotated[
    str, _grammar(_K8S_PORT_NAME, "a port name (up to 15 lowercase letters, digits and '-', with a letter)")
]
K8sQuantity = Annotated[str, _grammar(_K8S_QUANTITY, "a size such as 100Gi or 512Mi")]
DnsName = Annotated[str, _grammar(_DNS_NAME, "a DNS host name such as app.example.com", max_len=253, lower=True)]
GcpRepositoryId = Annotated[
    str, _grammar(_GCP_REPOSITORY_ID, "an Artifact Registry repository id (lowercase letters, digits, '-')")
]


# --------------------------------------------------------------------------- models


class _SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


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
    """One container of the pod (the seed's CON_NAME/CON_CMD/CON_ARG/CON_PORT/CON_GPU/CON_VOL)."""

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


class Readiness(_SpecModel):
    check: Annotated[ReadinessCheck, _one_of(typing.get_args(ReadinessCheck), "readiness check")] = "http"
    path: Annotated[
        str,
        _grammar(_HTTP_PATH, "an HTTP path such as /health (letters, digits and ._~/?=&%+-)", max_len=MAX_HTTP_PATH),
    ] = "/"
    timeout_seconds: Annotated[int, _ranged(integer=True, low=1, high=3600)] = 180
    interval_seconds: Annotated[float, _ranged(integer=False, low=0.1, high=60)] = 1.0


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


CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly")
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,-]+", re.ASCII)
_JOB_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?", re.ASCII)


def _cron(value: Any) -> str:
    """A preset or a five-field cron expression that croniter (Airflow's parser) accepts."""
    text = _require_str(value, f"a cron expression such as '0 3 * * *' or one of {', '.join(CRON_PRESETS)}").strip()
    if text in CRON_PRESETS:
        return text
    fields = text.split()
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(field) for field in fields):
        _fail(f"{_show(value)} is not a cron expression (five fields such as '0 3 * * *', or {', '.join(CRON_PRESETS)})")
    from croniter import croniter

    if not croniter.is_valid(text):
        _fail(f"{_show(value)} is not a valid cron expression")
    return " ".join(fields)


Cron = Annotated[str, BeforeValidator(_cron)]


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


# --------------------------------------------------------------------------- YAML


_FAST_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~15x faster; it parses every project


def _refuse_anchors_and_depth(text: str) -> None:
    """Anchors, aliases and deep nesting, found in the parser's event stream before anything is built."""
    level = 0
    for event in yaml.parse(text, Loader=_FAST_SAFE_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, "YAML anchors and aliases (& and *) are not allowed", event.start_mark)
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)) and level >= MAX_YAML_DEPTH:
            raise ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
        if isinstance(event, yaml.CollectionStartEvent):
            level += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            level -= 1


class _StrictLoader(_FAST_SAFE_LOADER):
    """``yaml.safe_load`` without merge keys, duplicate or non-string keys (anchors: see above)."""

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep=deep)
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConstructorError(None, None, "merge keys (<<) are not allowed", key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise ConstructorError(
                    None, None, f"keys must be strings, got {_described(key)}; put it in quotes", key_node.start_mark
                )
            if key in seen:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return yaml.constructor.BaseConstructor.construct_mapping(self, node, deep=deep)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"invalid YAML: {exc}"
    problem = exc.problem or "invalid YAML"
    if problem == "but found another document":
        problem = "more than one YAML document ('---'); keep a single document"
    elif exc.context:
        problem = f"{problem} ({exc.context})"
    mark = exc.problem_mark or exc.context_mark
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _decode(text: str | bytes, source: str) -> str:
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: larger than {MAX_SPEC_BYTES} bytes")
    if isinstance(text, str):
        return text
    try:
        return text.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{source}: not valid UTF-8 (byte {exc.start})") from None


def _load_yaml(text: str, source: str) -> Any:
    loader = _StrictLoader(text)
    try:
        _refuse_anchors_and_depth(text)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: {_describe_yaml_error(exc)}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise SpecError(f"{source}: invalid YAML value ({exc})") from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- error reporting


def _dotted(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path += f".{part}" if path else str(part)
    return path


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, Annotated):
        return next(filter(None, map(_model_in, typing.get_args(annotation))), None)
    return None


def _keys_of(model: type[BaseModel]) -> dict[str, str]:
    """Every accepted key of a model, mapped to the field it fills."""
    keys = {}
    for name, field in model.model_fields.items():
        keys[name] = name
        if isinstance(field.validation_alias, AliasChoices):
            keys.update({alias: name for alias in field.validation_alias.choices if isinstance(alias, str)})
    return keys


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = DeploymentSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field_name = _keys_of(model).get(part)
        if field_name is None:
            return None
        model = _model_in(model.model_fields[field_name].annotation)
        if model is None:
            return None
    return model


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    key, model = str(loc[-1]), _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    keys = _keys_of(model)
    if key in keys:
        return f"{key!r} and {keys[key]!r} are the same setting; give only {keys[key]!r}"
    return "unknown key; " + (_did_you_mean(key, keys) or f"expected one of: {', '.join(model.model_fields)}")


def _message(error: dict[str, Any]) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "spec":
        return error["msg"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return _unknown_key_message(error["loc"])
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, got {_described(value)}"
    if kind == "list_type":
        return f"must be a list, got {_described(value)}"
    return f"{error['msg']} (got {_show(value)})"


def _problems(error: ValidationError, source: str) -> list[str]:
    return [f"{_dotted(e['loc']) or source}: {_message(e)}" for e in error.errors(include_url=False)]


# --------------------------------------------------------------------------- public API


def validate_spec_data(
    data: Any, *, source: str = DEFAULT_SOURCE, legacy_forms: list[str] | None = None
) -> DeploymentSpec:
    """Validate already-parsed data (e.g. a JSON body), raising SpecError with every problem.

    Legacy forms that are read with a warning (TANGO's ``atp`` for ``apt``) are appended to
    ``legacy_forms`` when it is given, each as 'dotted.path: message', for the caller to show.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level must be a mapping with 'build' and 'deploy', got {_kind(data)}")
    found: list[str] = []
    try:
        spec = DeploymentSpec.model_validate(data, context={"legacy_forms": found})
    except ValidationError as exc:
        raise SpecError(_problems(exc, source)) from None
    if legacy_forms is not None:
        legacy_forms.extend(found)
    return spec


def parse_spec_text(
    text: str | bytes, *, source: str = DEFAULT_SOURCE, legacy_forms: list[str] | None = None
) -> DeploymentSpec:
    data = _load_yaml(_decode(text, source), source)
    if data is None:
        raise SpecError(f"{source}: the document is empty")
    return validate_spec_data(data, source=source, legacy_forms=legacy_forms)


def load_spec(
    path: pathlib.Path, *, source: str | None = None, legacy_forms: list[str] | None = None
) -> DeploymentSpec:
    """Read and validate ``path``; messages name it as ``source`` (the server's own path unless given)."""
    source = source or str(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{source}: not found") from None
    except IsADirectoryError:
        raise SpecError(f"{source}: is a directory, not a file") from None
    except OSError as exc:
        raise SpecError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    return parse_spec_text(raw, source=source, legacy_forms=legacy_forms)


def _resolve_inside(root: pathlib.Path, relative: str) -> pathlib.Path:
    """The file, or a ValueError that names no server path (the message reaches TANGO's users)."""
    try:
        resolved = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ValueError(f"{relative!r} not found in the project directory") from None
    if not resolved.is_relative_to(root):
        raise ValueError(f"{relative!r} links outside the project directory")
    if not resolved.is_file():
        raise ValueError(f"{relative!r} is not a regular file")
    return resolved


def check_project_files(spec: DeploymentSpec, project_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Resolve the optional files a spec names, each of which must be a regular file inside project_dir."""
    if spec.optional is None:
        return {}
    root = pathlib.Path(project_dir).resolve()
    found, problems = {}, []
    for field in OptionalFiles.model_fields:
        relative = getattr(spec.optional, field)
        if relative is None:
            continue
        try:
            found[f"optional.{field}"] = _resolve_inside(root, relative)
        except ValueError as exc:
            problems.append(f"optional.{field}: {exc}")
    if problems:
        raise SpecError(problems)
    return found
