"""The steps of DatasetGAN on a workspace, as library calls (the CLI and the studio call these).

    sample    -> candidates to annotate (seed, w and image stored together)
    train     -> the style interpreter, from the annotated candidates
    label     -> the interpreter's mask and uncertainty for candidates (pre-annotation)
    select    -> fresh candidates ranked by uncertainty (active learning, paper Table 6)
"""

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import ValidationError

from datasetgan.errors import DatasetGANError, summarize
from datasetgan.features import merge_levels
from datasetgan.formats.masks import load_mask
from datasetgan.labels import IGNORE, check_class_ids
from datasetgan.generators.base import Generator
from datasetgan.generators.registry import load_generator
from datasetgan.interpreter import InterpreterConfig, Labels, StyleInterpreter, TrainingHistory
from datasetgan.workspace import Workspace, candidate_id



def synth_batch(generator: Generator) -> int:
    """Images per synthesis call: 8 up to 512 px, fewer above, so pyramids stay ~1 GB."""
    return max(1, min(8, 2 * 2**20 // generator.resolution**2))


def open_generator(workspace: Workspace, device: str | torch.device = "auto") -> Generator:
    return load_generator(workspace.config.generator, device)


def feature_resolution(workspace: Workspace, generator: Generator) -> int:
    return workspace.config.features.resolve(generator.resolution)


def sample(workspace: Workspace, n: int, seed: int = 0, device: str | torch.device = "auto",
           generator: Generator | None = None) -> list[str]:
    """Add n candidates with consecutive seeds from `seed` on (seeds already present are skipped)."""
    if n < 1:
        raise DatasetGANError(f"-n must be at least 1 (got {n})")
    generator = generator or open_generator(workspace, device)
    sampling = workspace.config.sampling
    seeds = list(range(seed, seed + n))
    added = []
    for start in range(0, n, synth_batch(generator)):
        chunk = seeds[start : start + synth_batch(generator)]
        ws = generator.ws_from_seeds(chunk, sampling.psi, sampling.truncation_cutoff)
        images, _ = generator.synthesize(ws)
        added += workspace.add_candidates(chunk, ws, generator.to_uint8(images))
    return added


def shrink_pyramid(pyramid: list[torch.Tensor], size: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """Levels finer than the feature grid are resized to it once, then stored in `dtype`.

    Exact: a hypercolumn at size S reads each level bilinearly resized to S, so resizing a
    level to S ahead of time gives the same numbers; coarser levels stay native.
    """
    return [(F.interpolate(level, size=(size, size), mode="bilinear", align_corners=False)
             if level.shape[-1] > size else level).to(dtype) for level in pyramid]


def synthesize_pyramids(generator: Generator, ws: torch.Tensor, size: int, dtype: torch.dtype = torch.float32
                        ) -> list[torch.Tensor]:
    """Feature pyramids of many ws, no finer than `size`, stored as the interpreter reads them.

    Levels of one resolution are merged and kept channels-last in `dtype`, filled batch by
    batch into preallocated tensors: the interpreter then trains on them without a copy, and
    peak memory is the stored pyramids plus one batch.
    """
    step, stored = synth_batch(generator), []
    for start in range(0, len(ws), step):
        part = merge_levels(shrink_pyramid(generator.synthesize(ws[start : start + step])[1], size, dtype))
        if not stored:
            stored = [torch.empty((len(ws), *level.shape[1:]), dtype=dtype, device=level.device,
                                  memory_format=torch.channels_last) for level in part]
        for target, level in zip(stored, part):
            target[start : start + step] = level
    return stored


def read_annotation(workspace: Workspace, cid: str, size: int) -> torch.Tensor:
    """An annotation as [size, size] class ids, checked against the candidate and the classes."""
    path = workspace.annotation_path(cid)
    mask = load_mask(path)
    height, width = candidate_size(workspace, cid)
    if mask.shape != (height, width):
        raise DatasetGANError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                              f"{width}x{height}: masks must match their candidate image")
    check_class_ids(mask, workspace.num_classes, str(path), hint=": check the classes in the workspace config")
    tensor = torch.from_numpy(mask)
    if tensor.shape[-1] != size:  # features are capped below the image resolution: nearest keeps ids
        tensor = F.interpolate(tensor[None, None].float(), size=(size, size), mode="nearest")[0, 0].to(torch.uint8)
    return tensor


def candidate_size(workspace: Workspace, cid: str) -> tuple[int, int]:
    with Image.open(workspace.candidate_image(cid)) as image:
        return image.height, image.width


def min_fragment_pixels(size: int) -> int:
    """The paper's minimum, 20 pixels of its 512 px masks, as the same share of a size x size
    mask. A fixed 20 would erase the noses, mouths, ears and eyebrows of 64 px faces (10-15
    pixels each)."""
    return max(1, round(20 * size * size / 512**2))


def drop_small_fragments(mask: torch.Tensor, min_pixels: int | None = None) -> tuple[torch.Tensor, int]:
    """Classes covering fewer than min_pixels of an image become ignore, as the paper does
    (None: `min_fragment_pixels` of the mask's size)."""
    if min_pixels is None:
        min_pixels = min_fragment_pixels(mask.shape[-1])
    counts = torch.bincount(mask.flatten().long(), minlength=256)
    small = ((counts > 0) & (counts < min_pixels)).nonzero().flatten()
    small = small[small != IGNORE]
    if len(small) == 0:
        return mask, 0
    return torch.where(torch.isin(mask, small.to(mask.dtype)), torch.full_like(mask, IGNORE), mask), len(small)


def train(workspace: Workspace, device: str | torch.device = "auto", progress: bool = True,
          min_fragment: int | None = None) -> tuple[StyleInterpreter, TrainingHistory, dict]:
    """Train the style interpreter on every annotated candidate and save it in the workspace."""
    ids = workspace.annotated_ids()
    if not ids:
        raise DatasetGANError(f"no annotations in {workspace.annotations_dir}: paint some with `datasetgan annotate`")
    generator = open_generator(workspace, device)
    size = feature_resolution(workspace, generator)
    masks, dropped = [], 0
    for cid in ids:
        mask, n = drop_small_fragments(read_annotation(workspace, cid, size), min_fragment)
        masks.append(mask)
        dropped += n
    dtype = workspace.config.features.storage_dtype(generator.resolution)
    pyramid = synthesize_pyramids(generator, workspace.ws_for(ids), size, dtype)
    try:
        config = InterpreterConfig(num_classes=workspace.num_classes,
                                   **{**workspace.config.interpreter, "feature_resolution": size})
    except ValidationError as exc:
        raise DatasetGANError(
            f"invalid `interpreter` settings in {workspace.root}/datasetgan.yaml: {summarize(exc)}") from exc
    interpreter = StyleInterpreter(config, generator.feature_channels).to(generator.device)
    history = interpreter.fit(pyramid, torch.stack(masks), progress=progress)
    interpreter.save(workspace.interpreter_dir)
    report = {"annotated": len(ids), "fragments_dropped": dropped, "feature_resolution": size}
    return interpreter, history, report


def open_interpreter(workspace: Workspace, device: str | torch.device = "auto") -> StyleInterpreter:
    if not (workspace.interpreter_dir / "config.json").is_file():
        raise DatasetGANError(f"no interpreter in {workspace.interpreter_dir}: run `datasetgan train` first")
    return StyleInterpreter.load(workspace.interpreter_dir, device, num_classes=workspace.num_classes)


def label_ws(generator: Generator, interpreter: StyleInterpreter, ws: torch.Tensor
             ) -> tuple[torch.Tensor, Labels]:
    """Images (uint8) and the interpreter's labels at image resolution, for a batch of ws."""
    images, pyramid = generator.synthesize(ws)
    labels = interpreter.label(pyramid)
    if labels.mask.shape[-1] != generator.resolution:  # features capped below the image size
        size = (generator.resolution, generator.resolution)
        mask = F.interpolate(labels.mask[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)
        uncertainty = F.interpolate(labels.uncertainty[:, None], size=size, mode="bilinear")[:, 0]
        labels = Labels(mask, uncertainty, labels.scores)
    return generator.to_uint8(images), labels


def label(workspace: Workspace, ids: Sequence[str], device: str | torch.device = "auto") -> Labels:
    """The interpreter's mask, uncertainty map and score for candidates (pre-annotation)."""
    generator, interpreter = open_generator(workspace, device), open_interpreter(workspace, device)
    ws = workspace.ws_for([workspace.check_id(c) for c in ids])
    step = synth_batch(generator)
    parts = [label_ws(generator, interpreter, ws[i : i + step])[1] for i in range(0, len(ws), step)]
    return Labels(*(torch.cat(p) for p in zip(*parts)))


def select(workspace: Workspace, n: int, pool: int = 200, seed: int = 1_000_000,
           device: str | torch.device = "auto") -> list[str]:
    """Sample `pool` fresh seeds, keep the n the interpreter is least sure of, add them as candidates."""
    if n < 1 or pool < n:
        raise DatasetGANError(f"need 1 <= n <= pool (got n={n}, pool={pool})")
    generator, interpreter = open_generator(workspace, device), open_interpreter(workspace, device)
    sampling = workspace.config.sampling
    known = set(workspace.read_latents()[0])
    seeds = [s for s in range(seed, seed + pool + len(known)) if s not in known][:pool]
    scores = []
    step = synth_batch(generator)
    for start in range(0, pool, step):
        ws = generator.ws_from_seeds(seeds[start : start + step], sampling.psi, sampling.truncation_cutoff)
        scores.append(interpreter.label(generator.synthesize(ws)[1]).scores)
    order = torch.cat(scores).argsort(descending=True)[:n].tolist()
    chosen = [seeds[i] for i in order]
    ws = generator.ws_from_seeds(chosen, sampling.psi, sampling.truncation_cutoff)
    workspace.add_candidates(chosen, ws, generator.to_uint8(generator.synthesize(ws)[0]))
    return [candidate_id(s) for s in chosen]
