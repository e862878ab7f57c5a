"""How well a trained style interpreter labels generated samples it was not trained on.

    python bench/interpreter_heldout.py demo-output/workspace            # after `make demo`
    python bench/interpreter_heldout.py WORKSPACE --n 64 --seed 5000 --threads 1

Samples n fresh candidates into a copy of the workspace (the original is not touched), has
the world oracle paint them as it painted the demo's annotations, and scores the
interpreter's masks against them: per-class IoU. Low IoU on a part means the synthetic
masks are wrong there; high IoU with a downstream segmenter that still misses the part on
real images points at the gap between generated and real images instead.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from _tables import print_iou_table

from datasetgan.formats.masks import load_mask
from datasetgan.metrics import ConfusionMeter
from datasetgan.pipeline import Pipeline
from datasetgan.workspace import Workspace
from datasetgan.worlds.oracle import annotate_candidates, load_oracle


def heldout_iou(workspace: Path, n: int, seed: int, world: str) -> tuple[list[str], list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "workspace"
        shutil.copytree(workspace, copy, ignore=shutil.ignore_patterns("datasets"))
        ws, device = Workspace.open(copy), torch.device("cpu")
        pipeline = Pipeline(ws, device)
        ids = [c for c in pipeline.sample(range(seed, seed + n)) if c not in ws.annotated_ids()]
        annotate_candidates(ws, load_oracle(world, pipeline.generator.resolution, device), ids, device)
        predicted = pipeline.label(ids).mask
        truth = torch.from_numpy(np.stack([load_mask(ws.annotation_path(c)) for c in ids]))
        meter = ConfusionMeter(ws.num_classes)
        meter.update(predicted, truth)
        scores = meter.scores()
        return [c.name for c in ws.label_classes], scores.iou, scores.miou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path, help="a workspace with a trained interpreter")
    parser.add_argument("--n", type=int, default=64, help="fresh samples to score")
    parser.add_argument("--seed", type=int, default=5000, help="first seed of the fresh samples")
    parser.add_argument("--world", default="faces", help="the world whose oracle paints them")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names, iou, miou = heldout_iou(args.workspace, args.n, args.seed, args.world)
    print(f"interpreter vs oracle on fresh samples (seeds {args.seed}-{args.seed + args.n - 1}), IoU %:")
    print_iou_table(names, iou, miou)


if __name__ == "__main__":
    main()
