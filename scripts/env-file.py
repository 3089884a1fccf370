"""Print the variables of a ``.env`` file as ``export`` lines for ``scripts/stack.sh`` to eval.

TANGO's compose hands its ``.env`` to the containers (``env_file: .env``); the embedded stack does
the same with this. The file is parsed by python-dotenv (``KEY=VALUE``, ``export KEY=VALUE``,
comments, single or double quotes, ``${VAR}`` references), never sourced, so a value is data and
not shell: each is quoted with ``shlex.quote``. A name that is not a shell variable name stops the
start. A variable already in the environment keeps its value, as compose's ``environment:`` wins
over ``env_file:``.

    python scripts/env-file.py .env
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Iterator

from dotenv import dotenv_values

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def exports(path: str) -> Iterator[str]:
    for name, value in dotenv_values(path).items():
        if not NAME.match(name):
            raise SystemExit(f"{path}: {name!r} is not a variable name")
        if value is not None and name not in os.environ:  # a bare `NAME` line sets nothing
            yield f"export {name}={shlex.quote(value)}"


if __name__ == "__main__":
    print("\n".join(exports(sys.argv[1])))
