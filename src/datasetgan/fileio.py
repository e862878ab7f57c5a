"""Writing files so that a crash or a concurrent reader never sees half of one."""

import json
import os
import uuid
from pathlib import Path
from typing import Callable

from datasetgan.errors import DatasetGANError


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


def remove_orphaned_temporaries(folder: str | Path) -> int:
    """Delete the temporaries of `atomic_write` calls whose process died (kill -9) under `folder`.

    A temporary's name carries its writer's pid; one whose writer still runs is left alone.
    Returns how many were removed.
    """
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        parts = tmp.name.rsplit(".", 3)  # ".NAME", PID, TAG, "tmp"
        if len(parts) == 4 and parts[1].isdigit() and not _process_alive(int(parts[1])):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        pass
    return True


def writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create `folder` and prove it can be written now, not at the end of a long job."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DatasetGANError(f"cannot write to {what} {folder}: {exc.strerror or exc}") from exc
    return folder


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors, atomically, and the same bytes for the same tensors and metadata.

    safetensors writes its metadata in hash-map order, which changes from process to process;
    the header is rewritten with sorted keys and padded to its old length, so offsets stay valid.
    """
    from safetensors.torch import save  # torch only where tensors are written

    data = save(tensors, metadata=metadata)
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) <= length:  # always so: the same keys and values, only their order differs
        data = data[:8] + text.ljust(length) + data[8 + length :]
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_json(path: str | Path, payload: object) -> None:
    """Indented JSON, atomically, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2) + "\n"))
