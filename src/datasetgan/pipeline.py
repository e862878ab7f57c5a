"""A loaded workspace: its generator opened once, its interpreter once, and the steps of DatasetGAN.

    sample    -> candidates to annotate (seed, w and image stored together)
    train     -> the style interpreter, from the annotated candidates (kept; saved unless asked not to)
    label     -> the interpreter's mask and uncertainty for candidates (pre-annotation)
    select    -> fresh candidates ranked by uncertainty (active learning, paper Table 6)
    generate  -> a labelled synthetic dataset (`datasetgan.factory`)

In the spirit of a diffusers pipeline: the models are loaded on first use and kept, so a
demo, a `generate` or a studio process builds its generator once, and a trained interpreter
is used as trained rather than read back from disk.
"""

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from pydantic import ValidationError

from datasetgan import factory
from datasetgan.annotation import drop_small_fragments, read_annotation
from datasetgan.device import resolve_device
from datasetgan.errors import DatasetGANError, summarize
from datasetgan.features import merge_levels, shrink_pyramid
from datasetgan.generators.base import Generator
from datasetgan.generators.registry import load_generator
from datasetgan.interpreter import CONFIG_FILE, InterpreterConfig, Labels, StyleInterpreter, TrainingHistory
from datasetgan.labels import LabelClass
from datasetgan.uncertainty import rank_uncertain
from datasetgan.viz import grid
from datasetgan.workspace import SamplingSettings, Workspace, candidate_id

SELECTION_SEED = 1_000_000  # active learning's pool of fresh candidates starts here, away from sampled ones


def synth_batch(generator: Generator) -> int:
    """Images per synthesis call: at most 8, and no more than keep one call's float32 pyramids
    near 1 GiB (a 1024 px StyleGAN2 takes 2, a 1024 px StyleGAN3 with its wider last layers 1)."""
    values = sum(layer.channels * layer.resolution**2 for layer in generator.feature_layers)
    return max(1, min(8, 2**30 // (4 * values)))


def synthesize_pyramids(generator: Generator, ws: torch.Tensor, size: int, dtype: torch.dtype = torch.float32,
                        noise_ids: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Feature pyramids of many ws, no finer than `size`, stored as the interpreter reads them.

    Levels of one resolution are merged and kept channels-last in `dtype`, filled batch by
    batch into preallocated tensors: the interpreter then trains on them without a copy, and
    peak memory is the stored pyramids plus one batch.
    """
    step, stored = synth_batch(generator), []
    for start in range(0, len(ws), step):
        noise = None if noise_ids is None else noise_ids[start : start + step]
        part = merge_levels(shrink_pyramid(generator.synthesize(ws[start : start + step], noise)[1], size, dtype))
        if not stored:
            stored = [torch.empty((len(ws), *level.shape[1:]), dtype=dtype, device=level.device,
                                  memory_format=torch.channels_last) for level in part]
        for target, level in zip(stored, part):
            target[start : start + step] = level
    return stored


def sample_grid(generator: Generator, seeds: Sequence[int], sampling: SamplingSettings, columns: int = 8,
                condition: int | None = None) -> np.ndarray:
    """The images of `seeds` under `sampling` (psi, cutoff, noise; `condition`: the class of a
    conditional generator), tiled `columns` wide: uint8 [H, W, 3]."""
    seeds = list(seeds)
    class_ids = None if condition is None else [condition] * len(seeds)
    ws = generator.ws_from_seeds(seeds, sampling.psi, sampling.truncation_cutoff, class_ids)
    images, _ = generator.synthesize(ws, sampling.noise_ids(seeds))
    return grid(list(generator.to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()), columns)


class Pipeline:
    """One workspace with its generator and interpreter, each loaded at most once, on first use."""

    def __init__(self, workspace: Workspace, device: str | torch.device = "auto", generator: Generator | None = None):
        self.workspace, self.device = workspace, resolve_device(device)
        self._generator = generator
        self._interpreter: StyleInterpreter | None = None

    @classmethod
    def open(cls, root: str | Path, device: str | torch.device = "auto") -> "Pipeline":
        return cls(Workspace.open(root), device)

    @classmethod
    def from_annotations(cls, root: str | Path, generator: str, classes: Sequence[LabelClass],
                         annotations: Sequence[Path], device: str | torch.device = "auto",
                         loaded: Generator | None = None, **settings) -> "Pipeline":
        """A fresh workspace on `generator` (reference; `loaded`: that generator, already open) holding
        annotation files named SEED.png and their candidates."""
        pipeline = cls(Workspace.init(root, generator, classes, **settings), device, loaded)
        pipeline.sample([int(path.stem) for path in annotations])
        for path in annotations:
            shutil.copyfile(path, pipeline.workspace.annotation_path(path.stem))
        return pipeline

    # ---- the models --------------------------------------------------------------------

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = load_generator(self.workspace.config.generator, self.device)
        return self._generator

    @property
    def interpreter(self) -> StyleInterpreter:
        """The interpreter trained here, else the workspace's saved one (read once)."""
        if self._interpreter is None:
            folder = self.workspace.interpreter_dir
            if not (folder / CONFIG_FILE).is_file():
                raise DatasetGANError(f"no interpreter in {folder}: run `datasetgan train` first")
            self._interpreter = StyleInterpreter.load(folder, self.device, num_classes=self.workspace.num_classes)
        return self._interpreter

    def use(self, interpreter: StyleInterpreter | None) -> None:
        """Label with `interpreter` from now on (None: read the workspace's saved one when next needed)."""
        self._interpreter = interpreter

    @property
    def feature_resolution(self) -> int:
        return self.workspace.config.features.resolve(self.generator.resolution)

    def ws(self, seeds: Sequence[int], condition: int | None = None) -> torch.Tensor:
        """Latents for the seeds; `condition`: the class a conditional generator draws them for."""
        sampling = self.workspace.config.sampling
        class_ids = None if condition is None else [condition] * len(seeds)
        return self.generator.ws_from_seeds(seeds, sampling.psi, sampling.truncation_cutoff, class_ids)

    # ---- the steps ---------------------------------------------------------------------

    def sample(self, seeds: Sequence[int], condition: int | None = None) -> list[str]:
        """Add candidates for any list of seeds (seeds already present are skipped); latents written once.

        Each image is synthesised on its own: a batched convolution may round differently, and
        a candidate must be the image its seed gives anywhere (the person paints exactly it).
        """
        seeds = list(seeds)
        if not seeds:
            raise DatasetGANError("no seeds to sample: give at least one")
        ws, noise_ids = self.ws(seeds, condition), self.workspace.config.sampling.noise_ids
        images = torch.cat([self.generator.to_uint8(self.generator.synthesize(w[None], noise_ids([seed]))[0])
                            for seed, w in zip(seeds, ws)])
        return self.workspace.add_candidates(seeds, ws, images, condition)

    def fit(self, progress: bool = True, min_fragment: int | None = None
            ) -> tuple[StyleInterpreter, TrainingHistory, dict]:
        """A style interpreter trained on every annotated candidate; neither kept nor saved."""
        workspace, generator = self.workspace, self.generator
        ids = workspace.annotated_ids()
        if not ids:
            raise DatasetGANError(
                f"no annotations in {workspace.annotations_dir}: paint some with `datasetgan annotate`")
        size = self.feature_resolution
        masks, dropped = [], 0
        for cid in ids:
            mask, n = drop_small_fragments(read_annotation(workspace, cid, size), min_fragment)
            masks.append(mask)
            dropped += n
        dtype = workspace.config.features.storage_dtype(generator.resolution)
        pyramid = synthesize_pyramids(generator, workspace.ws_for(ids), size, dtype,
                                      workspace.config.sampling.noise_ids(ids))
        try:
            config = InterpreterConfig(num_classes=workspace.num_classes,
                                       **{**workspace.config.interpreter, "feature_resolution": size})
        except ValidationError as exc:
            raise DatasetGANError(
                f"invalid `interpreter` settings in {workspace.root}/datasetgan.yaml: {summarize(exc)}") from exc
        interpreter = StyleInterpreter(config, generator.feature_channels).to(generator.device)
        history = interpreter.fit(pyramid, torch.stack(masks), progress=progress)
        report = {"annotated": len(ids), "fragments_dropped": dropped, "feature_resolution": size}
        return interpreter, history, report

    def train(self, progress: bool = True, min_fragment: int | None = None, save: bool = True
              ) -> tuple[StyleInterpreter, TrainingHistory, dict]:
        """`fit`, then keep the interpreter for the next steps and (unless save=False) save it in the workspace."""
        interpreter, history, report = self.fit(progress, min_fragment)
        if save:
            interpreter.save(self.workspace.interpreter_dir)
        self.use(interpreter)
        return interpreter, history, report

    def label(self, ids: Sequence[str]) -> Labels:
        """The interpreter's mask, uncertainty map and score for candidates (pre-annotation)."""
        ws = self.workspace.ws_for([self.workspace.check_id(c) for c in ids])
        noise_ids, step = self.workspace.config.sampling.noise_ids, synth_batch(self.generator)
        parts = [factory.label_ws(self.generator, self.interpreter, ws[i : i + step], noise_ids(ids[i : i + step]))[1]
                 for i in range(0, len(ws), step)]
        return Labels(*(torch.cat(p) for p in zip(*parts)))

    def select(self, n: int, pool: int = 200, seed: int = SELECTION_SEED, condition: int | None = None) -> list[str]:
        """Sample `pool` fresh seeds (for class `condition` of a conditional generator), add the n
        the interpreter is least sure of as candidates.

        Each sample is synthesised once: the best n so far keep their images and ws.
        """
        if n < 1 or pool < n:
            raise DatasetGANError(f"need 1 <= n <= pool (got n={n}, pool={pool})")
        known = set(self.workspace.read_latents()[0])
        seeds = [s for s in range(seed, seed + pool + len(known)) if s not in known][:pool]
        best: list[tuple[float, int, torch.Tensor, torch.Tensor]] = []  # (score, seed, w, image)
        step = synth_batch(self.generator)
        for start in range(0, pool, step):
            chunk = seeds[start : start + step]
            ws = self.ws(chunk, condition)
            images, pyramid = self.generator.synthesize(ws, self.workspace.config.sampling.noise_ids(chunk))
            scores = self.interpreter.label(pyramid).scores.tolist()
            best += zip(scores, chunk, ws, self.generator.to_uint8(images))
            best = [best[i] for i in rank_uncertain([b[0] for b in best], [b[1] for b in best])[:n]]
        chosen = [b[1] for b in best]
        self.workspace.add_candidates(chosen, torch.stack([b[2] for b in best]), torch.stack([b[3] for b in best]),
                                      condition)
        return [candidate_id(s) for s in chosen]

    def generate(self, name: str, n: int, first_seed: int = factory.FIRST_SEED, drop_uncertain: float = 0.1,
                 shard: tuple[int, int] = (0, 1), batch_size: int = 8, progress: bool = True,
                 conditions: Sequence[int] | None = None, labeller: factory.Labeller | None = None) -> Path:
        """Generate (or resume) dataset `name` in the workspace (see `datasetgan.factory`);
        `conditions`: the classes a conditional generator draws, in turn by seed; `labeller`: what
        labels the images instead of the interpreter (e.g. `discovery.PartLabeller`)."""
        return factory.generate(self.workspace, self.generator, labeller or self.interpreter, name, n, first_seed,
                                drop_uncertain, shard, batch_size, progress, conditions)
