"""Machine-wide locks on files: the kernel releases them when their process dies, however it dies.

Used where two Airflow tasks on one machine must not overlap: two builds of one layer, and a
project's deploy and the stop that cancelled it (the stop waits until the killed deploy's
process is gone, so nothing it was creating is left behind).
"""

from __future__ import annotations

import fcntl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_ROOT = Path(tempfile.gettempdir())


@contextmanager
def file_lock(path: Path, timeout: float | None = None, poll: float = 0.1) -> Iterator[bool]:
    """Hold an exclusive lock on ``path``; yields False when ``timeout`` passed first (the block runs unlocked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        held = _acquire(handle, timeout, poll)
        try:
            yield held
        finally:
            if held:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle, timeout: float | None, poll: float) -> bool:
    if timeout is None:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)


def project_lock_path(project_key: str) -> Path:
    return LOCK_ROOT / "cloud-deploy-project-locks" / f"{project_key}.lock"
