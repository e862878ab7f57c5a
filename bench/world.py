"""Rendering speed of a procedural world, and the mIoU of its built-in oracle.

    python bench/world.py                       # faces, 1 thread, 32/64/128/256 px + oracle
    python bench/world.py --threads 2 --batch 64 --resolutions 64 --no-oracle

Reports wall-clock and process-CPU rates; on a machine shared with other jobs the CPU rate
is the steadier of the two. Takes about 20 s with the defaults.
"""

from __future__ import annotations

import argparse
import time

import torch

from datasetgan.worlds import WORLD_NAMES, get_world
from datasetgan.worlds.oracle import builtin_oracle_path, load_oracle, render_split


def measure(world, resolution: int, batch: int, seconds: float) -> tuple[float, float]:
    """Best-batch images/s (wall, cpu) over batches of fresh seeds for about `seconds`."""
    world.render(range(batch), resolution)  # warm-up: allocator, lazy imports
    best_wall = best_cpu = float("inf")
    start, seed = time.perf_counter(), 10_000
    while time.perf_counter() - start < seconds:
        wall, cpu = time.perf_counter(), time.process_time()
        world.render(range(seed, seed + batch), resolution)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        seed += batch
    return batch / best_wall, batch / max(best_cpu, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="faces", choices=WORLD_NAMES)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=0,
                        help="images per render call (default: 256 at 32 px, 64 at 64 px, "
                             "16 at 128 px, 8 at 256 px)")
    parser.add_argument("--seconds", type=float, default=4.0, help="time spent per resolution")
    parser.add_argument("--oracle", action=argparse.BooleanOptionalAction, default=True,
                        help="also score the built-in 64 px oracle on the real test split")
    parser.add_argument("--n-test", type=int, default=1000)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    world = get_world(args.world)
    print(f"world={args.world} threads={args.threads} torch={torch.__version__}")
    for resolution in args.resolutions:
        batch = args.batch or max(8, 256 * 32 * 32 // (resolution * resolution))
        wall, cpu = measure(world, resolution, batch, args.seconds)
        print(f"{resolution:4d} px  batch {batch:4d}  {wall:8.1f} images/s (wall)  "
              f"{cpu:8.1f} images/s (cpu)")
    if args.oracle:
        report_oracle(args.world, args.n_test)


def report_oracle(world: str, n_test: int) -> None:
    from datasetgan.segment.train import evaluate

    if not builtin_oracle_path(world, 64).is_file():
        print(f"no built-in oracle for {world} at 64 px: `datasetgan world oracle train` makes one")
        return
    device = torch.device("cpu")
    images, labels = render_split(world, "real_test", n_test, 64)
    classes = get_world(world).classes
    scores = evaluate(load_oracle(world, 64, device), images, labels, len(classes), device)
    per_class = "  ".join(f"{c.name} {100 * v:.1f}" for c, v in zip(classes, scores.iou))
    print(f"oracle on {n_test} real test images at 64 px: mIoU {100 * scores.miou:.2f}%  "
          f"pixel accuracy {100 * scores.pixel_accuracy:.2f}%\n  {per_class}")


if __name__ == "__main__":
    main()
