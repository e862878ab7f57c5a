"""The interpreter's part in the studio: cached pre-annotations and training in the background."""

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from datasetgan.errors import DatasetGANError
from datasetgan.interpreter import CONFIG_FILE, StyleInterpreter
from datasetgan.pipeline import Pipeline

logger = logging.getLogger(__name__)


class Prediction(NamedTuple):
    mask: np.ndarray  # [H, W] uint8 class ids (the members' vote)
    uncertainty: np.ndarray  # [H, W] float32 mutual information between members
    score: float  # the image's uncertainty score (mean of its most uncertain pixels)


class Predictions:
    """The interpreter's labels per candidate, computed on demand and cached until it changes.

    One lock serialises labelling (CPU-heavy; two requests for a candidate label it once) and
    installing a newly trained interpreter, so labelling never reads a half-written one. The
    pipeline's generator serves the whole process; only its interpreter is ever swapped.
    """

    def __init__(self, pipeline: Pipeline):
        self.pipeline, self.workspace = pipeline, pipeline.workspace
        self._cache: dict[str, Prediction] = {}
        self._version: tuple[int, int] | None = None
        self._lock = threading.Lock()

    @property
    def config_path(self) -> Path:
        return self.workspace.interpreter_dir / CONFIG_FILE

    def available(self) -> bool:
        return self.config_path.is_file()

    def get(self, ids: Sequence[str]) -> dict[str, Prediction]:
        """Predictions for checked candidate ids; the uncached ones are labelled in one batch."""
        with self._lock:
            self._drop_stale()
            missing = [cid for cid in ids if cid not in self._cache]
            if missing:
                labels = self.pipeline.label(missing)
                for i, cid in enumerate(missing):
                    self._cache[cid] = Prediction(labels.mask[i].cpu().numpy(), labels.uncertainty[i].cpu().numpy(),
                                                  float(labels.scores[i]))
            return {cid: self._cache[cid] for cid in ids}

    def cached_scores(self) -> dict[str, float]:
        with self._lock:
            self._drop_stale()
            return {cid: p.score for cid, p in self._cache.items()}

    def install(self, trained: Path, interpreter: StyleInterpreter) -> None:
        """Make `interpreter`, saved in `trained` (a folder in the workspace), the workspace's own."""
        live = self.workspace.interpreter_dir
        retired = live.with_name(f".{live.name}-retired")
        with self._lock:
            shutil.rmtree(retired, ignore_errors=True)
            if live.exists():
                live.rename(retired)
            trained.rename(live)
            shutil.rmtree(retired, ignore_errors=True)
            self.pipeline.use(interpreter)
            self._cache.clear()
            self._version = self._interpreter_version()

    def _drop_stale(self) -> None:
        """Forget predictions of an interpreter replaced behind our back (e.g. `datasetgan train`)."""
        version = self._interpreter_version()
        if version != self._version:
            self.pipeline.use(None)  # read the new one when next needed
            self._cache.clear()
            self._version = version

    def _interpreter_version(self) -> tuple[int, int] | None:
        stat = self.config_path.stat() if self.available() else None
        return (stat.st_mtime_ns, stat.st_size) if stat else None


class TrainingJob:
    """`Pipeline.fit` in a background thread, one at a time; the page polls `status`."""

    def __init__(self, pipeline: Pipeline, predictions: Predictions):
        self.workspace, self.pipeline, self.predictions = pipeline.workspace, pipeline, predictions
        self._status = {"state": "idle", "message": "not trained in this session"}
        self._lock = threading.Lock()

    @property
    def staging_dir(self) -> Path:
        return self.workspace.root / ".interpreter-training"

    def start(self) -> bool:
        """Start a training; False (and nothing started) when one is already running."""
        with self._lock:
            if self._status["state"] == "running":
                return False
            self._status = {"state": "running", "message": "training the interpreter"}
        threading.Thread(target=self._run, name="datasetgan-studio-train", daemon=True).start()
        return True

    def status(self) -> dict[str, str]:
        with self._lock:
            return dict(self._status)

    def _run(self) -> None:
        started = time.monotonic()
        try:
            shutil.rmtree(self.staging_dir, ignore_errors=True)
            interpreter, _, report = self.pipeline.fit(progress=False)
            interpreter.save(self.staging_dir)
            self.predictions.install(self.staging_dir, interpreter)
        except DatasetGANError as exc:
            self._finish("error", str(exc))
        except Exception as exc:  # a crash must reach the page, not end silently with the thread
            logger.exception("studio training failed")
            self._finish("error", f"training failed: {exc!r}")
        else:
            seconds = time.monotonic() - started
            self._finish("done", f"trained on {report['annotated']} annotation(s) in {seconds:.0f} s")

    def _finish(self, state: str, message: str) -> None:
        with self._lock:
            self._status = {"state": state, "message": message}
