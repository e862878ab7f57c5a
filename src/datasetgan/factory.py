"""The label factory: seeds in, a labelled synthetic dataset out, resumable and exact.

Seeds [first, first + n) are cut into fixed batches. Each batch is synthesised, labelled by
the style interpreter (or another `Labeller`: discovered parts), and written as images/,
masks/, uncertainty/ (one PNG each) plus latents/BATCH.safetensors (its seeds and ws), every
file atomically; a batch counts as done only once its record file parts/BATCH.jsonl exists,
written last. A run killed at any moment therefore resumes by redoing unfinished batches,
with the same batch composition and so the same bytes. When every batch is done, a final
pass over all records marks the most uncertain fraction as dropped and writes manifest.jsonl.

Shards (`shard=(i, k)`) take contiguous runs of batches, so k machines can each run one into
their own folder; `merge` gathers the parts and makes the one manifest. `datasetgan.engines`
runs the same batches (`generate_batch`, one at a time) on Ray workers or torchrun ranks.
"""

import math
import shutil
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel

from datasetgan.errors import DatasetGANError
from datasetgan.features import Pyramid
from datasetgan.fileio import atomic_write, remove_orphaned_temporaries, save_tensors
from datasetgan.formats.dataset import read_records, sample_name, write_classes, write_manifest, write_records
from datasetgan.formats.masks import save_image, save_mask
from datasetgan.generators.base import Generator, class_labels
from datasetgan.interpreter import Labels
from datasetgan.progress import progress_bar
from datasetgan.uncertainty import rank_uncertain
from datasetgan.workspace import NoiseMode, Workspace

SETTINGS_FILE = "dataset.json"
FIRST_SEED = 100_000_000  # synthetic samples' seeds start here, far from the candidates' (0, 1, 2, ...)


class Labeller(Protocol):
    """What labels the factory's images: the style interpreter, or discovered parts (`discovery.PartLabeller`)."""

    kind: str  # recorded in the dataset's settings: "interpreter" or "clusters"

    @property
    def uncertainty_scale(self) -> float:
        """The uncertainty drawn white in the uncertainty PNGs: the largest the labeller gives."""

    def label(self, pyramid: Pyramid) -> Labels:
        """Mask [N, S, S] uint8, uncertainty [N, S, S] and image scores [N] (higher: more uncertain)."""


class GenerationSettings(BaseModel):
    """What defines a dataset's contents; a resume must use the same."""

    generator: str
    first_seed: int = 0
    n: int
    batch_size: int = 8
    psi: float = 0.7
    truncation_cutoff: int | None = None
    noise: NoiseMode = "const"
    drop_uncertain: float = 0.1
    uncertainty_scale: float  # uncertainty PNGs hold round(255 * u / scale); the labeller's maximum u
    conditions: list[int] | None = None  # a conditional generator's classes: seed s draws conditions[s % len]
    labeller: str = "interpreter"  # what labelled the images (Labeller.kind); older datasets: the interpreter

    def batches(self) -> list[range]:
        seeds = range(self.first_seed, self.first_seed + self.n)
        return [seeds[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]

    def class_ids(self, seeds: Sequence[int]) -> list[int] | None:
        """The class of each seed: fixed by the seed alone, so shards and resumes agree."""
        return None if not self.conditions else [self.conditions[s % len(self.conditions)] for s in seeds]


def batch_name(batch: range) -> str:
    return f"{batch.start:010d}"


def shard_batches(batches: list[range], shard: tuple[int, int]) -> list[range]:
    index, count = shard
    if not 0 <= index < count:
        raise DatasetGANError(f"--shard {index}/{count}: the index must be 0..{count - 1}")
    per_shard = math.ceil(len(batches) / count)
    return batches[index * per_shard : (index + 1) * per_shard]


def prepare_dataset(folder: Path, settings: GenerationSettings, workspace: Workspace) -> None:
    """Create the folder, or check that the one there was made with the same settings."""
    path = folder / SETTINGS_FILE
    if path.exists():
        existing = GenerationSettings.model_validate_json(path.read_text())
        if existing != settings:
            diff = {k: (v, getattr(settings, k)) for k, v in existing if getattr(settings, k) != v}
            raise DatasetGANError(
                f"{folder} was generated with other settings {diff} (old, new): choose another --name or delete it"
            )
        remove_orphaned_temporaries(folder)  # a run killed mid-write leaves its half-written file behind
        return
    try:
        for sub in ("images", "masks", "uncertainty", "latents", "parts"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetGANError(f"cannot write dataset folder {folder}: {exc.strerror or exc}") from exc
    write_classes(folder, workspace.label_classes)
    atomic_write(path, lambda tmp: Path(tmp).write_text(settings.model_dump_json(indent=2)))


def write_batch(folder: Path, batch: range, images: torch.Tensor, ws: torch.Tensor, labels, settings,
                colors) -> None:
    names = [sample_name(s) for s in batch]
    uncertainty = (labels.uncertainty / settings.uncertainty_scale).clamp(0, 1).mul(255).round().to(torch.uint8)
    for i, name in enumerate(names):
        save_image(folder / "images" / f"{name}.png", images[i].permute(1, 2, 0).cpu().numpy())
        save_mask(folder / "masks" / f"{name}.png", labels.mask[i].cpu().numpy(), colors)
        save_image(folder / "uncertainty" / f"{name}.png", np.repeat(uncertainty[i, :, :, None].cpu().numpy(), 3, 2))
    latents = folder / "latents" / f"{batch_name(batch)}.safetensors"
    tensors = {"seeds": torch.tensor(list(batch)), "ws": ws.float().cpu().contiguous()}
    save_tensors(latents, tensors)
    records = [{"name": name, "seed": seed, "w": f"latents/{latents.name}", "w_index": i,
                "score": float(labels.scores[i])} for i, (name, seed) in enumerate(zip(names, batch))]
    for record, condition in zip(records, settings.class_ids(batch) or []):
        record["condition"] = condition
    write_records(folder / "parts" / f"{batch_name(batch)}.jsonl", records)


def label_ws(generator: Generator, interpreter: Labeller, ws: torch.Tensor,
             noise_ids: Sequence[int] | None = None) -> tuple[torch.Tensor, Labels]:
    """Images (uint8) and the labeller's labels at image resolution, for a batch of ws (and their noise ids)."""
    images, pyramid = generator.synthesize(ws, noise_ids)
    labels = interpreter.label(pyramid)
    if labels.mask.shape[-1] != generator.resolution:  # features capped below the image size
        size = (generator.resolution, generator.resolution)
        mask = F.interpolate(labels.mask[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)
        uncertainty = F.interpolate(labels.uncertainty[:, None], size=size, mode="bilinear")[:, 0]
        labels = Labels(mask, uncertainty, labels.scores)
    return generator.to_uint8(images), labels


def dataset_settings(workspace: Workspace, generator: Generator, labeller: Labeller, n: int,
                     first_seed: int = FIRST_SEED, drop_uncertain: float = 0.1, batch_size: int = 8,
                     conditions: Sequence[int] | None = None) -> GenerationSettings:
    """The settings of a dataset, checked before anything is written; the same in every worker of a
    scaled-out run, which each computes them from the same workspace."""
    if n < 1:
        raise DatasetGANError(f"-n must be at least 1 (got {n})")
    if not 0 <= drop_uncertain < 1:
        raise DatasetGANError(f"--drop-uncertain must be in [0, 1) (got {drop_uncertain})")
    sampling = workspace.config.sampling
    settings = GenerationSettings(generator=workspace.config.generator, first_seed=first_seed, n=n,
                                  batch_size=batch_size, psi=sampling.psi,
                                  truncation_cutoff=sampling.truncation_cutoff, noise=sampling.noise,
                                  drop_uncertain=drop_uncertain,
                                  uncertainty_scale=max(labeller.uncertainty_scale, 1e-6),
                                  conditions=list(conditions) if conditions else None, labeller=labeller.kind)
    class_labels(settings.conditions, len(settings.conditions or ()), generator.c_dim)
    return settings


def pending_batches(folder: Path, settings: GenerationSettings, shard: tuple[int, int] = (0, 1)) -> list[range]:
    """The shard's batches not yet recorded: what a (re-)run still has to make."""
    return [b for b in shard_batches(settings.batches(), shard)
            if not (folder / "parts" / f"{batch_name(b)}.jsonl").exists()]


def generate_batch(folder: Path, settings: GenerationSettings, workspace: Workspace, generator: Generator,
                   labeller: Labeller, batch: range) -> None:
    """Synthesise, label and write one batch: the one code path of every engine, so the same batch
    gives the same bytes whichever process makes it (at the same torch thread count)."""
    ws = generator.ws_from_seeds(list(batch), settings.psi, settings.truncation_cutoff, settings.class_ids(batch))
    images, labels = label_ws(generator, labeller, ws, workspace.config.sampling.noise_ids(batch))
    write_batch(folder, batch, images, ws, labels, settings, [c.color for c in workspace.label_classes])


def generate(workspace: Workspace, generator: Generator, interpreter: Labeller, name: str, n: int,
             first_seed: int = FIRST_SEED, drop_uncertain: float = 0.1, shard: tuple[int, int] = (0, 1),
             batch_size: int = 8, progress: bool = True, conditions: Sequence[int] | None = None) -> Path:
    """Generate (or resume) dataset `name`, labelled by `interpreter` (any `Labeller`); finalises the
    manifest when all batches are done.
    `conditions`: the classes a conditional generator draws (see `GenerationSettings.class_ids`)."""
    settings = dataset_settings(workspace, generator, interpreter, n, first_seed, drop_uncertain, batch_size,
                                conditions)
    folder = workspace.datasets_dir / name
    prepare_dataset(folder, settings, workspace)
    todo, total = pending_batches(folder, settings, shard), sum(map(len, shard_batches(settings.batches(), shard)))
    with progress_bar(total=total, initial=total - sum(map(len, todo)), show=progress, desc=f"generating {name}",
                      unit="sample") as bar:
        for batch in todo:
            generate_batch(folder, settings, workspace, generator, interpreter, batch)
            bar.update(len(batch))
    if missing_batches(folder, settings):
        return folder  # other shards still to come: `merge` finalises
    finalize(folder, settings)
    return folder


def missing_batches(folder: Path, settings: GenerationSettings) -> list[str]:
    return [batch_name(b) for b in settings.batches() if not (folder / "parts" / f"{batch_name(b)}.jsonl").exists()]


def finalize(folder: Path, settings: GenerationSettings) -> None:
    """One manifest for all batches; the `drop_uncertain` most uncertain samples are marked kept=false."""
    records = []
    for batch in settings.batches():
        records += read_records(folder / "parts" / f"{batch_name(batch)}.jsonl")
    drop = set(most_uncertain(records, settings.drop_uncertain))
    write_manifest(folder, [r | {"kept": i not in drop} for i, r in enumerate(records)])


def most_uncertain(records: list[dict], fraction: float) -> list[int]:
    """Indices of the round(fraction * len) most uncertain records: the ones a dataset drops."""
    ranked = rank_uncertain([r["score"] for r in records], [r["seed"] for r in records])
    return ranked[: round(fraction * len(records))]


def merge(target: Path, shards: list[Path]) -> Path:
    """Copy the finished batches of shard folders into `target` and finalise its manifest."""
    settings = GenerationSettings.model_validate_json((target / SETTINGS_FILE).read_text())
    for shard in shards:
        other = GenerationSettings.model_validate_json((shard / SETTINGS_FILE).read_text())
        if other != settings:
            raise DatasetGANError(f"{shard} was generated with other settings than {target}: cannot merge")
        for part in sorted((shard / "parts").glob("*.jsonl")):
            for record in read_records(part):
                for sub in ("images", "masks", "uncertainty"):
                    shutil.copyfile(shard / sub / f"{record['name']}.png", target / sub / f"{record['name']}.png")
            shutil.copyfile(shard / "latents" / f"{part.stem}.safetensors", target / "latents" / f"{part.stem}.safetensors")
            shutil.copyfile(part, target / "parts" / part.name)  # last: the batch is complete in target
    missing = missing_batches(target, settings)
    if missing:
        raise DatasetGANError(f"{len(missing)} batch(es) still missing (first seeds: {', '.join(missing[:5])}): "
                              "run the remaining shards, then merge again")
    finalize(target, settings)
    return target

