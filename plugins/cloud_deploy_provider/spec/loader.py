"""Reading ``deployment.yaml`` safely (size and depth limits, no anchors or custom tags, libyaml when present),
turning pydantic's errors into ``dotted.path: message`` lines, and resolving the project files it names."""

import pathlib
import types
import typing
from typing import Annotated, Any

import yaml
from pydantic import AliasChoices, BaseModel, ValidationError
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from cloud_deploy_provider.spec.document import DeploymentSpec, OptionalFiles
from cloud_deploy_provider.spec.errors import SpecError, _described, _did_you_mean, _kind, _show

MAX_SPEC_BYTES = 256 * 1024
MAX_YAML_DEPTH = 32
DEFAULT_SOURCE = "deployment.yaml"


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
