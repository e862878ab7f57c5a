"""Candidates' feature pyramids for the studio's assists (magic wand, auto-parts), made on demand.

A pyramid costs a synthesis and, at 1024 px, about half a gigabyte; the person works on one image
at a time, so the few most recently used candidates are kept (going back to the previous image
is free) and older ones dropped. Each is synthesised exactly as the candidate's image was: its
stored latent and noise id, alone in its batch.
"""

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

from datasetgan.annotate.wand import PyramidSimilarity
from datasetgan.annotation import candidate_size
from datasetgan.features import Pyramid
from datasetgan.pipeline import Pipeline

KEEP = 2  # candidates kept: the current image and the one before


class CandidateFeatures:
    """One candidate's pyramid (the generator's levels, native resolution) and its image size."""

    def __init__(self, pyramid: Pyramid, size: tuple[int, int]):
        self.pyramid, self.size = pyramid, size
        self._similarity: PyramidSimilarity | None = None

    @property
    def similarity(self) -> PyramidSimilarity:
        """The wand's similarities at image resolution (its norms are computed on first use)."""
        if self._similarity is None:
            self._similarity = PyramidSimilarity(self.pyramid, self.size)
        return self._similarity


class FeatureCache:
    """The pyramids of the `keep` most recently used candidates (ids already checked).

    One lock: a candidate is synthesised once however many requests ask for it, and the
    CPU-heavy assists run one at a time instead of thrashing each other.
    """

    def __init__(self, pipeline: Pipeline, keep: int = KEEP):
        self.pipeline, self.keep = pipeline, keep
        self._kept: OrderedDict[str, CandidateFeatures] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def open(self, cid: str) -> Iterator[CandidateFeatures]:
        """The candidate's features, held (no other assist runs) until the block ends."""
        with self._lock:
            if cid not in self._kept:
                while len(self._kept) >= self.keep:  # before synthesising: at most `keep` pyramids in memory
                    self._kept.popitem(last=False)
                self._kept[cid] = CandidateFeatures(self._synthesize(cid), candidate_size(self.pipeline.workspace, cid))
            self._kept.move_to_end(cid)
            yield self._kept[cid]

    def _synthesize(self, cid: str) -> Pyramid:
        workspace, generator = self.pipeline.workspace, self.pipeline.generator
        ws = workspace.ws_for([cid])
        return generator.synthesize(ws, workspace.config.sampling.noise_ids([cid]))[1]
