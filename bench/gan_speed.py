"""Seconds per kimg of the GAN trainer: activation modulation vs per-sample grouped convs.

    python bench/gan_speed.py [--steps 6] [--threads 2]

Both paths compute the same maths (tests/test_stylegan2.py checks it); only the way the
per-sample styles meet the conv weights differs. Run on an otherwise idle machine.
"""

import argparse
import time

import torch

from datasetgan.gan.train import GANConfig, Trainer


class Noise:
    description = "noise"

    def __init__(self, resolution: int):
        self.resolution = resolution

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(step)
        return torch.rand(batch_size, 3, self.resolution, self.resolution, generator=g) * 2 - 1


def seconds_per_kimg(cfg: GANConfig, steps: int) -> float:
    trainer = Trainer(cfg, Noise(cfg.resolution), torch.device("cpu"))
    trainer.step()  # warm-up (allocator, oneDNN kernels); also an R1 step
    started = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return (time.perf_counter() - started) / (steps * cfg.batch_size) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = GANConfig()  # the built-in faces64 configuration
    results = {fused: seconds_per_kimg(base.model_copy(update={"fused_modconv": fused}), args.steps)
               for fused in (False, True)}
    print(f"config: {base.resolution}px, channel_base {base.channel_base}, channel_max {base.channel_max}, "
          f"batch {base.batch_size}, {args.threads} threads")
    print(f"activation modulation : {results[False]:6.1f} s/kimg")
    print(f"grouped conv per sample: {results[True]:6.1f} s/kimg")
    print(f"speed-up               : {results[True] / results[False]:.2f}x")


if __name__ == "__main__":
    main()
