"""Seconds per kimg of our GAN trainer against NVIDIA's stylegan2-ada-pytorch, side by side.

    python bench/gan_speed.py --nvidia DIR [--steps 16] [--threads 1]
    NVIDIA_STYLEGAN2_ADA=DIR python bench/gan_speed.py

DIR is a checkout of NVlabs/stylegan2-ada-pytorch kept outside this repository (its licence
is not ours: nothing of it is committed); it imports under torch 2.x once `scipy`, `click`,
`requests` and `setuptools<81` are installed, and its custom ops fall back to their
reference implementations on a CPU.

Both trainers get the same networks (z = w = 128, 4 mapping layers, G channel_base 2048,
D resnet channel_base 4096, channel_max 128, minibatch std group 4, no fp16, no clamp:
1,127,544 and 1,465,025 parameters, checked), the same losses (non-saturating logistic,
lazy R1 with gamma 0.03 every 16 steps, no path-length regularisation, no style mixing),
Adam (0.0025, betas 0 / 0.99, rescaled for the lazy interval) and the generator EMA, batch
32. NVIDIA's step follows its training loop: Gmain, Dmain, and Dreg every 16 steps.
The two run interleaved, step by step, in one process with the same thread count, so that
a busy machine slows them alike; each times a whole R1 period after one untimed warm-up.
The process keeps freed memory as our CLI does (`keep_freed_memory`), which speeds both;
`--default-malloc` leaves glibc's default, which slows NVIDIA's code more than ours.
"""

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from datasetgan.device import keep_freed_memory
from datasetgan.gan.train import GANConfig, Trainer

CONFIG = GANConfig(d_channel_base=4096, style_mixing=0.0, batch_size=32, r1_gamma=0.03, r1_interval=16)


class Noise:
    """Uniform noise as the 'real' images: the data does not change the cost of a step."""

    description = "noise"

    def __init__(self, resolution: int):
        self.resolution = resolution

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(step)
        return torch.rand(batch_size, 3, self.resolution, self.resolution, generator=g) * 2 - 1


class NvidiaTrainer:
    """NVIDIA's networks and StyleGAN2Loss, stepped the way its training loop steps them."""

    def __init__(self, cfg: GANConfig, source: Noise, repo: Path):
        sys.path.insert(0, str(repo))
        from torch_utils.ops import conv2d_gradfix  # noqa: PLC0415 (NVIDIA's code, imported on demand)
        from training.loss import StyleGAN2Loss  # noqa: PLC0415
        from training.networks import Discriminator, Generator  # noqa: PLC0415

        conv2d_gradfix.enabled = True  # as its training loop sets it (a no-op off CUDA)
        torch.manual_seed(cfg.seed)
        common = dict(c_dim=0, img_resolution=cfg.resolution, img_channels=3)
        self.G = Generator(z_dim=cfg.z_dim, w_dim=cfg.w_dim, **common,
                           mapping_kwargs=dict(num_layers=cfg.mapping_layers),
                           synthesis_kwargs=dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                                 num_fp16_res=0, conv_clamp=None)).train().requires_grad_(False)
        self.D = Discriminator(**common, architecture="resnet", channel_base=cfg.d_channel_base,
                               channel_max=cfg.channel_max, num_fp16_res=0, conv_clamp=None,
                               epilogue_kwargs=dict(mbstd_group_size=4)).train().requires_grad_(False)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.loss = StyleGAN2Loss(torch.device("cpu"), self.G.mapping, self.G.synthesis, self.D,
                                  style_mixing_prob=cfg.style_mixing, r1_gamma=cfg.r1_gamma, pl_weight=0)
        ratio = cfg.r1_interval / (cfg.r1_interval + 1)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.g_lr, betas=cfg.betas, eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr * ratio,
                                      betas=[b**ratio for b in cfg.betas], eps=1e-8)
        self.cfg, self.source, self.step_index = cfg, source, 0

    def step(self) -> None:
        cfg = self.cfg
        real = self.source.batch(self.step_index, cfg.batch_size)
        c = torch.zeros(cfg.batch_size, 0)
        phases = [("Gmain", self.G, self.opt_G, 1), ("Dmain", self.D, self.opt_D, 1)]
        if self.step_index % cfg.r1_interval == 0:
            phases.append(("Dreg", self.D, self.opt_D, cfg.r1_interval))
        for name, module, opt, gain in phases:
            z = torch.randn(cfg.batch_size, cfg.z_dim)
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            self.loss.accumulate_gradients(name, real, c, z, c, sync=True, gain=gain)
            module.requires_grad_(False)
            opt.step()
        self._update_ema()
        self.step_index += 1

    @torch.no_grad()
    def _update_ema(self) -> None:  # its training loop's rule: half-life ema_kimg with ramp-up
        cfg = self.cfg
        ema_nimg = min(cfg.ema_kimg * 1000, (self.step_index + 1) * cfg.batch_size * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch_size / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def seconds_per_kimg(trainers: dict[str, object], steps: int, batch_size: int) -> dict[str, float]:
    seconds = dict.fromkeys(trainers, 0.0)
    for trainer in trainers.values():
        trainer.step()  # warm-up (allocator, oneDNN kernels); also an R1 step
    for _ in range(steps):
        for name, trainer in trainers.items():
            started = time.perf_counter()
            trainer.step()
            seconds[name] += time.perf_counter() - started
    return {name: s / (steps * batch_size) * 1000 for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nvidia", type=Path, default=os.environ.get("NVIDIA_STYLEGAN2_ADA"),
                        help="a checkout of NVlabs/stylegan2-ada-pytorch (or $NVIDIA_STYLEGAN2_ADA)")
    parser.add_argument("--steps", type=int, default=16, help="timed steps each (16: one whole R1 period)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's default malloc thresholds")
    args = parser.parse_args()
    if args.nvidia is None or not (args.nvidia / "training" / "networks.py").is_file():
        parser.error("--nvidia DIR must be a checkout of NVlabs/stylegan2-ada-pytorch (training/networks.py)")
    torch.set_num_threads(args.threads)
    if not args.default_malloc:
        keep_freed_memory()
    ours = Trainer(CONFIG, Noise(CONFIG.resolution), torch.device("cpu"))
    nvidia = NvidiaTrainer(CONFIG, Noise(CONFIG.resolution), args.nvidia)
    counts = {"ours": (parameter_count(ours.G), parameter_count(ours.D)),
              "NVIDIA": (parameter_count(nvidia.G), parameter_count(nvidia.D))}
    if counts["ours"] != counts["NVIDIA"]:
        raise SystemExit(f"the networks differ in size (G, D parameters): {counts}")
    results = seconds_per_kimg({"ours": ours, "NVIDIA": nvidia}, args.steps, CONFIG.batch_size)
    print(f"config: {CONFIG.resolution} px, G {counts['ours'][0]:,} / D {counts['ours'][1]:,} parameters, "
          f"batch {CONFIG.batch_size}, R1 every {CONFIG.r1_interval}, {args.threads} thread(s), "
          f"{args.steps} steps each, interleaved, "
          f"{'glibc default malloc' if args.default_malloc else 'freed memory kept'}")
    for name, value in results.items():
        print(f"{name:8s}: {value:7.1f} s/kimg")
    print(f"ours is {results['NVIDIA'] / results['ours']:.2f}x NVIDIA's speed")


if __name__ == "__main__":
    main()
