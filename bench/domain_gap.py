"""Label noise or generated-vs-real gap? The demo's segmenter, retrained on exact labels.

    python bench/domain_gap.py demo-output/workspace/datasets/synthetic     # after `make demo`
    python bench/domain_gap.py DATASET --threads 1

Trains the demo's segmenter (same steps, batch and seed) on the images of a generated
dataset with the world oracle's masks in place of the style interpreter's, and tests it on
the real test split. Compared with the demo's DatasetGAN row (the same images with the
interpreter's masks), the difference is what label noise costs; what is left below the
oracle's own score is the gap between generated and real images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _tables import print_iou_table

from datasetgan.demo import DemoConfig, score
from datasetgan.segment.data import load_labelled
from datasetgan.segment.train import predict
from datasetgan.worlds.oracle import load_oracle, render_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a generated dataset folder (images/ and masks/)")
    parser.add_argument("--world", default="faces")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, demo = torch.device("cpu"), DemoConfig()
    images, _, classes = load_labelled(args.dataset)
    masks = predict(load_oracle(args.world, images.shape[-1], device), images, device)
    test = render_split(args.world, "real_test", demo.n_test, images.shape[-1])
    scores = score("the oracle's masks", images, masks, test, len(classes), demo, device)
    print(f"segmenter on {len(images)} generated images with the oracle's masks, tested on real, IoU %:")
    print_iou_table([c.name for c in classes], scores.iou, scores.miou)


if __name__ == "__main__":
    main()
