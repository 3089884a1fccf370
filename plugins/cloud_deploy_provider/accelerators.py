"""One accelerator model for every target, and each target's names for it.

A project asks for accelerators in three places that mean one thing: ``build.accelerator``
(``gpu``, ``gpu:nvidia:a100:2`` or a mapping), ``deploy.resources.gpu`` (a count) and a
Backend.AI slot key in ``deploy.resources`` (``atom-max.device: 1``, as in TANGO's samples).
:func:`request_of` merges them into one :class:`AcceleratorRequest`, refusing contradictions.
One function per target turns a request into that target's resource names, or raises
:class:`AcceleratorError` naming the target, the accelerator and what the target offers;
:func:`cloud_deploy_provider.targets.accelerator_mappings` lists them, as the target registry names them.

Core layer: no airflow imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from cloud_deploy_provider.errors import UserError

TYPES = ("cpu", "gpu", "npu", "tpu")
VENDORS = ("nvidia", "amd", "rebellion", "google", "intel")
# What each vendor makes; the first vendor of a type is its default.
VENDOR_TYPES = {"nvidia": ("gpu",), "amd": ("gpu",), "intel": ("gpu", "npu"), "rebellion": ("npu",), "google": ("tpu",)}
DEFAULT_VENDOR = {"gpu": "nvidia", "tpu": "google"}
# Type names that stand for a type and a vendor: TANGO's code generator writes ``accelerator: cuda``
# for an NVIDIA GPU (CUDA is NVIDIA's platform, as in Backend.AI's ``cuda.device`` slot below).
TYPE_ALIASES = {"cuda": ("gpu", "nvidia")}


@dataclass(frozen=True)
class Slot:
    """What a Backend.AI resource slot holds; ``fraction`` slots count shares of a device."""

    type: str
    vendor: str
    model: str | None = None
    fraction: bool = False


# Backend.AI's accelerator plugins and the slot each one registers.
BACKENDAI_SLOTS = {
    "cuda.device": Slot("gpu", "nvidia"),
    "cuda.shares": Slot("gpu", "nvidia", fraction=True),
    "rocm.device": Slot("gpu", "amd"),
    "atom.device": Slot("npu", "rebellion", "atom"),
    "atom-plus.device": Slot("npu", "rebellion", "atom-plus"),
    "atom-max.device": Slot("npu", "rebellion", "atom-max"),
    "tpu.device": Slot("tpu", "google"),
    "gaudi2.device": Slot("npu", "intel", "gaudi2"),
}


class AcceleratorError(UserError):
    """A request is contradictory, or a target cannot provide it."""


@dataclass(frozen=True)
class AcceleratorRequest:
    type: str = "cpu"
    vendor: str | None = None
    model: str | None = None
    count: int = 0
    shares: float | None = None

    @property
    def wants_device(self) -> bool:
        return self.type != "cpu" and (self.count > 0 or bool(self.shares))

    @property
    def effective_vendor(self) -> str | None:
        return self.vendor or DEFAULT_VENDOR.get(self.type)

    def __str__(self) -> str:
        text = ":".join(part for part in (self.type, self.vendor, self.model) if part)
        if self.shares:
            return f"{text} ({self.shares:g} shares)"
        return f"{text}:{self.count}" if self.type != "cpu" else text


def request_of(
    type: str = "cpu",
    vendor: str | None = None,
    model: str | None = None,
    count: int = 0,
    shares: float | None = None,
    *,
    gpu: int | None = None,
    slots: Mapping[str, int | float] | None = None,
) -> AcceleratorRequest:
    """Merge ``build.accelerator`` with ``deploy.resources.gpu`` and slot keys; contradictions raise."""
    request = AcceleratorRequest(type, vendor, model, count if type != "cpu" else 0, shares)
    _check_vendor(request)
    if request.type == "cpu" and (count or shares):
        raise AcceleratorError("build.accelerator: a cpu accelerator takes no count or shares")
    if shares is not None and (request.type != "gpu" or request.effective_vendor != "nvidia"):
        raise AcceleratorError("build.accelerator.shares: fractional shares exist for NVIDIA GPUs only")
    if gpu and slots:
        raise AcceleratorError(f"deploy.resources: give gpu or {', '.join(sorted(slots))}, not both")
    if gpu:
        request = _with_gpu_count(request, gpu)
    if len(slots or {}) > 1:
        raise AcceleratorError(f"deploy.resources: give one accelerator slot, not {', '.join(sorted(slots))}")
    for key, amount in (slots or {}).items():
        request = _with_slot(request, key, amount)
    return request


def _check_vendor(request: AcceleratorRequest) -> None:
    if request.vendor is None or request.type == "cpu":
        return
    made = VENDOR_TYPES[request.vendor]
    if request.type not in made:
        raise AcceleratorError(
            f"build.accelerator: {request.vendor} makes {' and '.join(t.upper() + 's' for t in made)}, "
            f"not {request.type.upper()}s"
        )


def _with_gpu_count(request: AcceleratorRequest, gpu: int) -> AcceleratorRequest:
    if request.type in ("npu", "tpu"):
        raise AcceleratorError(f"deploy.resources.gpu: {gpu} GPUs contradicts build.accelerator {request.type}")
    return replace(request, type="gpu", count=gpu)


def _with_slot(request: AcceleratorRequest, key: str, amount: int | float) -> AcceleratorRequest:
    slot = BACKENDAI_SLOTS.get(key)
    if slot is None:
        raise AcceleratorError(
            f"deploy.resources.{key}: not an accelerator slot; known: {', '.join(BACKENDAI_SLOTS)}"
        )
    if not slot.fraction and amount != int(amount):
        raise AcceleratorError(f"deploy.resources.{key}: devices are counted whole, not {amount:g}")
    asked = [
        (what, mine, theirs)
        for what, mine, theirs in (("type", request.type, slot.type), ("vendor", request.vendor, slot.vendor),
                                   ("model", request.model, slot.model))
        if mine is not None and theirs is not None and mine != theirs and not (what == "type" and mine == "cpu")
    ]
    if asked:
        what, mine, theirs = asked[0]
        raise AcceleratorError(f"deploy.resources.{key} is {theirs} ({what}), but build.accelerator asks for {mine}")
    counted = {"shares": float(amount), "count": 0} if slot.fraction else {"count": int(amount), "shares": None}
    return replace(request, type=slot.type, vendor=slot.vendor, model=slot.model or request.model, **counted)


# --------------------------------------------------------------------------- per target


def _refuse(target: str, request: AcceleratorRequest, reason: str) -> AcceleratorError:
    return AcceleratorError(f"{target}: cannot provide accelerator {request}: {reason}")


def _whole(target: str, request: AcceleratorRequest) -> int:
    if request.shares:
        raise _refuse(target, request, "fractional GPU shares are a Backend.AI feature; ask for a whole count")
    return request.count


def _single_vendor(target: str, request: AcceleratorRequest, offers: dict[tuple[str, str], str], what: str) -> str:
    key = (request.type, request.effective_vendor or "")
    if key not in offers:
        if request.effective_vendor is None:
            raise _refuse(target, request, f"name the vendor, e.g. {request.type}:<vendor>:<model>:<count>")
        raise _refuse(target, request, f"{what}")
    return offers[key]


def docker_devices(request: AcceleratorRequest) -> dict[str, int]:
    """The engine's ``--gpus``: an NVIDIA DeviceRequest for ``count`` GPUs."""
    if not request.wants_device:
        return {}
    name = _single_vendor("docker", request, {("gpu", "nvidia"): "nvidia"},
                          "the Docker engine passes NVIDIA GPUs only (--gpus)")
    return {name: _whole("docker", request)}


def _aws_gpus(target: str, request: AcceleratorRequest) -> dict[str, int]:
    """ECS and Batch count NVIDIA GPUs (resourceRequirements type GPU); the instance type sets the model."""
    if not request.wants_device:
        return {}
    name = _single_vendor(target, request, {("gpu", "nvidia"): "GPU"}, "AWS offers NVIDIA GPUs here only")
    return {name: _whole(target, request)}


def ecs_resources(request: AcceleratorRequest) -> dict[str, int]:
    return _aws_gpus("aws-ecs", request)


def batch_resources(request: AcceleratorRequest) -> dict[str, int]:
    return _aws_gpus("aws-batch", request)


# SageMaker instance families with NVIDIA GPUs, and their GPU model.
SAGEMAKER_GPU_FAMILIES = {
    "g4dn": "t4", "g5": "a10g", "g6": "l4", "g6e": "l40s", "p3": "v100", "p3dn": "v100",
    "p4d": "a100", "p4de": "a100", "p5": "h100", "p5e": "h200", "p5en": "h200",
}


def sagemaker_check(request: AcceleratorRequest, instance_type: str) -> None:
    """SageMaker attaches GPUs by instance type: the type must have the GPUs asked for."""
    if not request.wants_device:
        return
    target = "aws-sagemaker"
    _single_vendor(target, request, {("gpu", "nvidia"): "GPU"}, "SageMaker offers NVIDIA GPUs only")
    _whole(target, request)
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 else ""
    gpu_model = SAGEMAKER_GPU_FAMILIES.get(family)
    if gpu_model is None:
        families = ", ".join(f"ml.{name}.*" for name in SAGEMAKER_GPU_FAMILIES)
        raise _refuse(target, request, f"{instance_type} has no GPU; use a GPU instance type ({families})")
    if request.model and request.model != gpu_model:
        raise _refuse(target, request, f"{instance_type} has {gpu_model} GPUs, not {request.model}")


# build.accelerator model -> Cloud Run's nodeSelector accelerator; the first is the default.
CLOUD_RUN_GPUS = {"l4": "nvidia-l4", "rtx-pro-6000": "nvidia-rtx-pro-6000"}


def cloud_run_gpu(request: AcceleratorRequest) -> str | None:
    """Cloud Run's GPU type (one per instance), or None for a CPU-only service."""
    if not request.wants_device:
        return None
    target = "gcp-cloudrun"
    _single_vendor(target, request, {("gpu", "nvidia"): "GPU"}, "Cloud Run offers NVIDIA GPUs only")
    if _whole(target, request) != 1:
        raise _refuse(target, request, "Cloud Run attaches exactly one GPU per instance")
    if request.model is None:
        return next(iter(CLOUD_RUN_GPUS.values()))
    if request.model not in CLOUD_RUN_GPUS:
        raise _refuse(target, request, f"Cloud Run offers the GPU models {', '.join(CLOUD_RUN_GPUS)}")
    return CLOUD_RUN_GPUS[request.model]


def ktc_gpus(request: AcceleratorRequest) -> int:
    """The KT Cloud agent takes a count of NVIDIA GPUs."""
    if not request.wants_device:
        return 0
    _single_vendor("ktc", request, {("gpu", "nvidia"): "gpu"}, "the KT Cloud agent runs NVIDIA GPUs only")
    return _whole("ktc", request)


def backendai_slots(request: AcceleratorRequest) -> dict[str, int | float]:
    """Backend.AI resource slots: cuda.device or cuda.shares, rocm.device, atom*.device, ..."""
    if not request.wants_device:
        return {}
    target = "compute-session"
    vendor = request.effective_vendor
    candidates = [
        (key, slot) for key, slot in BACKENDAI_SLOTS.items()
        if slot.type == request.type and slot.vendor == vendor and slot.fraction == bool(request.shares)
    ]
    if vendor is None:
        raise _refuse(target, request, f"name the vendor, e.g. {request.type}:rebellion:atom-max:1")
    if not candidates:
        if request.shares:
            raise _refuse(target, request, "fractional shares exist for NVIDIA GPUs only (cuda.shares)")
        offered = sorted({f"{slot.type}:{slot.vendor}" for slot in BACKENDAI_SLOTS.values()})
        raise _refuse(target, request, f"Backend.AI has accelerator plugins for {', '.join(offered)}")
    modelled = [(key, slot) for key, slot in candidates if slot.model is not None]
    if modelled:
        models = {slot.model: key for key, slot in modelled}
        model = request.model or modelled[0][1].model
        if model not in models:
            raise _refuse(target, request, f"{vendor} {request.type.upper()} models are {', '.join(models)}")
        return {models[model]: request.count}
    key = candidates[0][0]
    return {key: request.shares if request.shares else request.count}


KUBERNETES_RESOURCES = {
    ("gpu", "nvidia"): "nvidia.com/gpu",
    ("gpu", "amd"): "amd.com/gpu",
    ("gpu", "intel"): "gpu.intel.com/i915",
    ("npu", "rebellion"): "rebellions.ai/npu",
    ("npu", "intel"): "habana.ai/gaudi",
    ("tpu", "google"): "google.com/tpu",
}


def kubernetes_resources(request: AcceleratorRequest) -> dict[str, int]:
    """Extended resource names of the vendors' device plugins (Rebellions' generic name since v0.4)."""
    if not request.wants_device:
        return {}
    name = _single_vendor("kubernetes", request, KUBERNETES_RESOURCES,
                          f"no device plugin resource is known for {request.type}:{request.effective_vendor}")
    return {name: _whole("kubernetes", request)}
