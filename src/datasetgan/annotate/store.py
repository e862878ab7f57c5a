"""Annotation masks on disk for the studio: one writer per candidate, earlier versions kept.

A save replaces `annotations/ID.png` atomically after copying the version it replaces to
`annotations/.history/ID-<timestamp>.png`. The history lives in a sub-folder so that
`Workspace.annotated_ids` (which globs `annotations/*.png`) never mistakes it for an annotation.
"""

import shutil
import threading
from datetime import datetime
from pathlib import Path

import numpy as np

from datasetgan.errors import DatasetGANError
from datasetgan.fileio import atomic_write
from datasetgan.formats.masks import load_mask, save_mask
from datasetgan.workspace import Workspace

HISTORY_KEEP = 20  # versions kept per candidate: autosave writes often, so the history is pruned


class AnnotationStore:
    """Reads and writes the workspace's annotations; ids must already be checked by the caller."""

    def __init__(self, workspace: Workspace, keep: int = HISTORY_KEEP):
        self.workspace, self.keep = workspace, keep
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @property
    def history_dir(self) -> Path:
        return self.workspace.annotations_dir / ".history"

    def load(self, cid: str) -> np.ndarray | None:
        path = self.workspace.annotation_path(cid)
        return load_mask(path) if path.is_file() else None

    def save(self, cid: str, mask: np.ndarray) -> bool:
        """Write `mask` (already validated); False when it equals the saved one (nothing written)."""
        path = self.workspace.annotation_path(cid)
        with self._lock(cid):
            if path.is_file():
                if self._same(path, mask):
                    return False
                self._keep_previous(cid)
            self.workspace.annotations_dir.mkdir(parents=True, exist_ok=True)
            save_mask(path, mask, [c.color for c in self.workspace.config.classes])
            return True

    def history(self, cid: str) -> list[Path]:
        """Earlier versions of a candidate's mask, oldest first."""
        return sorted(self.history_dir.glob(f"{cid}-*.png"))

    def _lock(self, cid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(cid, threading.Lock())

    @staticmethod
    def _same(path: Path, mask: np.ndarray) -> bool:
        try:
            return np.array_equal(load_mask(path), mask)
        except DatasetGANError:  # an unreadable file is kept in the history and replaced
            return False

    def _keep_previous(self, cid: str) -> None:
        self.history_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
        source = self.workspace.annotation_path(cid)
        atomic_write(self.history_dir / f"{cid}-{stamp}.png", lambda tmp: shutil.copyfile(source, tmp))
        for old in self.history(cid)[: -self.keep]:
            old.unlink(missing_ok=True)
