"""The world oracle: a segmenter trained on thousands of exactly labelled world images.

It stands in for a person with the annotation studio (it labels GAN samples for the demo
and the benchmarks), it is the fully supervised upper bound, and its deep features are
the space in which world-FD compares generated images with the world's.
"""

from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from datasetgan.errors import DatasetGANError
from datasetgan.formats.masks import save_mask
from datasetgan.metrics import SegmentationScores
from datasetgan.segment.train import (SegmenterConfig, evaluate, load_segmenter, predict, save_segmenter,
                                      train_segmenter)
from datasetgan.workspace import Workspace
from datasetgan.worlds import get_world

ORACLE_CONFIG = SegmenterConfig(architecture="unet-resnet18", epochs=12, batch_size=32, lr=2e-3)


def builtin_oracle_path(world: str, resolution: int) -> Path:
    return Path(str(resources.files("datasetgan.worlds") / "weights" / f"{world}{resolution}-oracle.safetensors"))


def render_split(world: str, split: str, n: int, resolution: int, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n seeds of a world's named split: uint8 images [n,3,R,R] and labels [n,R,R]."""
    source = get_world(world)
    seeds = list(source.seed_ranges[split][:n])
    parts = [source.render(seeds[i : i + batch], resolution) for i in range(0, n, batch)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def train_oracle(world: str, resolution: int, n_train: int, n_test: int, device: torch.device,
                 cfg: SegmenterConfig = ORACLE_CONFIG, out: Path | None = None) -> tuple[nn.Module, SegmentationScores]:
    """Train on the first n_train `real_train` seeds, score on the first n_test `real_test` seeds."""
    classes = get_world(world).classes
    images, labels = render_split(world, "real_train", n_train, resolution)
    model, _ = train_segmenter(images, labels, len(classes), cfg, device)
    test_images, test_labels = render_split(world, "real_test", n_test, resolution)
    scores = evaluate(model, test_images, test_labels, len(classes), device)
    if out is not None:
        save_segmenter(model, out, cfg.architecture, [c.name for c in classes], half=True,
                       extra={"world": world, "resolution": resolution, "n_train": n_train, "n_test": n_test,
                              "test_miou": scores.miou, "config": cfg.model_dump()})
    return model, scores


def load_oracle(world: str, resolution: int, device: torch.device, path: Path | None = None) -> nn.Module:
    path = path or builtin_oracle_path(world, resolution)
    if not Path(path).is_file():
        raise DatasetGANError(
            f"no oracle for world {world!r} at {resolution} px ({path}): train one with `datasetgan world oracle train`"
        )
    model, _ = load_segmenter(path, device)
    return model


def annotate_candidates(workspace: Workspace, oracle: nn.Module, ids: list[str], device: torch.device) -> None:
    """Label candidates as a person would in the studio: the oracle's prediction, saved as masks."""
    images = torch.from_numpy(np.stack([np.asarray(Image.open(workspace.candidate_image(c)).convert("RGB"))
                                        for c in ids])).permute(0, 3, 1, 2)
    colors = [c.color for c in workspace.label_classes]
    for cid, mask in zip(ids, predict(oracle, images, device)):
        save_mask(workspace.annotation_path(cid), mask.numpy(), colors)
