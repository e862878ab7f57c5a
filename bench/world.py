"""Rendering speed of a procedural world: images per second at each resolution.

    python bench/world.py                       # faces, 1 thread, 32/64/128/256 px
    python bench/world.py --threads 2 --batch 64 --resolutions 64

Reports wall-clock and process-CPU rates; on a machine shared with other jobs the CPU rate
is the steadier of the two. Takes about 20 s with the defaults.
"""

from __future__ import annotations

import argparse
import time

import torch

from datasetgan.worlds import WORLD_NAMES, get_world


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
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    world = get_world(args.world)
    print(f"world={args.world} threads={args.threads} torch={torch.__version__}")
    for resolution in args.resolutions:
        batch = args.batch or max(8, 256 * 32 * 32 // (resolution * resolution))
        wall, cpu = measure(world, resolution, batch, args.seconds)
        print(f"{resolution:4d} px  batch {batch:4d}  {wall:8.1f} images/s (wall)  "
              f"{cpu:8.1f} images/s (cpu)")


if __name__ == "__main__":
    main()
