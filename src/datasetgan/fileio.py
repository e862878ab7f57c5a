"""Writing files so that a crash or a concurrent reader never sees half of one."""

import os
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call write(tmp) on a fresh name in the same folder, then rename it over `path`.

    The temporary file is created by `write` itself, so it gets the usual permissions (umask).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
