"""Seconds per kimg of the GAN trainer: ours against a straightforward implementation.

    python bench/gan_speed.py [--steps 6] [--threads 2]

Straightforward: per-sample modulated weights in a grouped convolution, NCHW tensors.
Ours: activation modulation (one convolution shared by the batch) in channels-last layout.
The paths compute the same maths (tests/test_stylegan2.py checks it); the designs run
interleaved, step by step, so that a busy machine slows them alike. A CPU benchmark: the
layouts it compares are CPU questions.
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


DESIGNS = {
    "grouped conv per sample, NCHW (straightforward)": {"fused_modconv": True, "channels_last": False},
    "activation modulation, NCHW": {"fused_modconv": False, "channels_last": False},
    "activation modulation, channels-last (ours)": {"fused_modconv": False, "channels_last": True},
}


def seconds_per_kimg(cfg: GANConfig, steps: int) -> dict[str, float]:
    trainers = {name: Trainer(cfg.model_copy(update=update), Noise(cfg.resolution), torch.device("cpu"))
                for name, update in DESIGNS.items()}
    seconds = dict.fromkeys(trainers, 0.0)
    for trainer in trainers.values():
        trainer.step()  # warm-up (allocator, oneDNN kernels); also an R1 step
    for _ in range(steps):
        for name, trainer in trainers.items():
            started = time.perf_counter()
            trainer.step()
            seconds[name] += time.perf_counter() - started
    return {name: s / (steps * cfg.batch_size) * 1000 for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = GANConfig()  # the built-in faces64 configuration
    results = seconds_per_kimg(base, args.steps)
    print(f"config: {base.resolution}px, channel_base {base.channel_base}, channel_max {base.channel_max}, "
          f"batch {base.batch_size}, {args.threads} threads, {args.steps} steps each")
    for name, value in results.items():
        print(f"{name:50s}: {value:6.1f} s/kimg")
    straightforward, ours = results[next(iter(DESIGNS))], results[list(DESIGNS)[-1]]
    print(f"{'speed-up of ours':50s}: {straightforward / ours:.2f}x")


if __name__ == "__main__":
    main()
