"""How the spec's problems are worded: one :class:`SpecError` holding every problem as
``dotted.path: message``, and the descriptions of a bad value those messages use."""

import difflib
import typing
from collections.abc import Iterable
from typing import Any

from pydantic_core import PydanticCustomError

from cloud_deploy_provider.errors import UserError


class SpecError(UserError):
    """Every problem found, each as 'dotted.path: message a user can act on'."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __reduce__(self):
        return type(self), (self.problems,)


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
