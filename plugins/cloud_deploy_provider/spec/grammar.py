"""The strict grammar of every value that reaches a Dockerfile, a command line, a file path or a resource
name: patterns, checks with messages a user can act on, the annotated types the sections are made of, and the
strict base of every section (unknown keys are errors). Imported by the connections' own models too."""

import ipaddress
import math
import re
from functools import partial
from typing import Annotated, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from cloud_deploy_provider.spec.errors import _described, _did_you_mean, _fail, _show

ARCHITECTURES = ("x86", "x86_64", "amd64", "arm", "arm64", "aarch64")
PLATFORM_OS = "linux"


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
        from cloud_deploy_provider.spec.document import Resources  # the document is made of these grammars

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


class _SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
