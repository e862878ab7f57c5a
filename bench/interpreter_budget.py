"""The style interpreter's training budget: does a minimum number of steps help small images?

    python bench/interpreter_budget.py                                   # min_steps 0, 8k, 16k, 32k
    python bench/interpreter_budget.py --min-steps 0,16000 --n 128 --threads 1

The paper's stopping rule counts epochs (from epoch 4, a member stops after 50 batches without a
new loss minimum). An epoch is every labelled pixel once, in batches of 64: about 1,024 batches
at 64 px against ~62k at 512 px, so at 64 px members stop after a few thousand steps where the
release's ran for hundreds of thousands. Here the interpreter trains on the shipped 16
annotations of builtin:faces64 once per `min_steps`, and labels n fresh samples that the world
oracle paints (as it painted the annotations): per-class IoU of the interpreter's masks against
the oracle's, the steps its members ran and the seconds it took.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _tables import print_iou_table

from datasetgan.demo import shipped_annotations
from datasetgan.metrics import ConfusionMeter
from datasetgan.pipeline import Pipeline
from datasetgan.segment.data import read_image
from datasetgan.segment.train import predict
from datasetgan.worlds import get_world
from datasetgan.worlds.oracle import load_oracle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-steps", default="0,8000,16000,32000", help="comma-separated min_steps to compare")
    parser.add_argument("--n", type=int, default=256, help="fresh samples to score")
    parser.add_argument("--seed", type=int, default=5000, help="first seed of the fresh samples")
    parser.add_argument("--interpreter-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, world = torch.device("cpu"), get_world("faces")
    masks = sorted(shipped_annotations().glob("*.png"))
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline.from_annotations(Path(tmp) / "workspace", "builtin:faces64", list(world.classes), masks,
                                             device)
        workspace = pipeline.workspace
        ids = [c for c in pipeline.sample(range(args.seed, args.seed + args.n)) if c not in workspace.annotated_ids()]
        images = torch.from_numpy(np.stack([read_image(workspace.candidate_image(c)) for c in ids])).permute(0, 3, 1, 2)
        truth = predict(load_oracle("faces", pipeline.generator.resolution, device), images, device)
        print(f"interpreter vs oracle on {len(ids)} fresh samples (seeds {args.seed}-{args.seed + args.n - 1}), "
              f"interpreter seed {args.interpreter_seed}, {args.threads} thread(s)")
        for min_steps in [int(v) for v in args.min_steps.split(",")]:
            workspace.config.interpreter = {"min_steps": min_steps, "seed": args.interpreter_seed}
            started = time.monotonic()
            _, history, _ = pipeline.train(progress=False, save=False)
            seconds = time.monotonic() - started
            meter = ConfusionMeter(workspace.num_classes)
            meter.update(pipeline.label(ids).mask, truth)
            scores = meter.scores()
            print(f"\nmin_steps {min_steps}: members stopped after {min(history.member_batches)}-"
                  f"{max(history.member_batches)} steps (median {statistics.median(history.member_batches):.0f}), "
                  f"{seconds:.0f} s")
            print_iou_table([c.name for c in workspace.label_classes], scores.iou, scores.miou)


if __name__ == "__main__":
    main()
