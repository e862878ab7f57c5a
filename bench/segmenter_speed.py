"""Training-step time of the downstream segmenters on a CPU, interleaved step by step.

    python bench/segmenter_speed.py                      # 2 threads, batch 16 and 32, 64 px
    python bench/segmenter_speed.py --threads 1 --steps 12

Each round runs one training step (`segment.train.train_step`: augmentation, forward,
cross-entropy, backward, Adam) of every architecture in turn, so that another job on the
machine slows them alike; the first two rounds are warm-up. Prints the median seconds per
step and each architecture's time relative to the first.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from datasetgan.segment.models import build_segmenter
from datasetgan.segment.train import SegmenterConfig, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architectures", default="unet-resnet18,unet-resnet18-slim")
    parser.add_argument("--batches", default="16,32")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, rng = torch.device("cpu"), torch.Generator().manual_seed(0)
    names = args.architectures.split(",")
    for batch in map(int, args.batches.split(",")):
        images = torch.randint(0, 256, (batch, 3, args.resolution, args.resolution), dtype=torch.uint8, generator=rng)
        masks = torch.randint(0, 10, (batch, args.resolution, args.resolution), dtype=torch.uint8, generator=rng)
        runs = {}
        for name in names:
            model = build_segmenter(name, 10).to(memory_format=torch.channels_last)
            runs[name] = (model, torch.optim.Adam(model.parameters(), 1e-3), [])
        for round_ in range(args.steps + 2):
            for name, (model, optimizer, times) in runs.items():
                start = time.perf_counter()
                train_step(model, images, masks, SegmenterConfig(architecture=name), optimizer, rng, device)
                if round_ >= 2:
                    times.append(time.perf_counter() - start)
        first = statistics.median(runs[names[0]][2])
        for name, (_, _, times) in runs.items():
            median = statistics.median(times)
            print(f"batch {batch:3d}  {name:<22} {median * 1000:7.0f} ms/step  {median / batch * 1000:6.1f} ms/image  "
                  f"{first / median:5.2f}x the speed of {names[0]}")


if __name__ == "__main__":
    main()
