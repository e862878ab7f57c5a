"""world-FD: the Frechet distance between generated and world images, measured in the
feature space of the world oracle (as FID does with Inception, but for our own domain).

The floor is the distance between two disjoint sets of world images of the same size:
a generator cannot be told apart from the world below it.

Beside it, part coverage: for each class, the share of pixels the oracle labels as that
class on generated images over the share it labels on world images. A generator that draws
faces without mouths has a low world-FD long before its mouth coverage reaches 1.
"""

import torch
from torch import nn

from datasetgan.generators.base import zs_from_seeds
from datasetgan.generators.stylegan2 import StyleGAN2Generator
from datasetgan.segment.models import normalize
from datasetgan.worlds import get_world
from datasetgan.worlds.oracle import render_split


@torch.no_grad()
def read(oracle: nn.Module, images: torch.Tensor, device: torch.device, num_classes: int,
         batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N,3,H,W] -> the oracle's embeddings (its deepest features, pooled; float64 [N, D])
    and its share of all pixels for each class (float64 [num_classes]), from one encoder pass."""
    oracle.eval()
    embeddings, counts = [], torch.zeros(num_classes, dtype=torch.float64)
    for i in range(0, len(images), batch_size):
        skips = oracle.encode(normalize(images[i : i + batch_size].to(device)))
        embeddings.append(skips[-1].mean(dim=(2, 3)).double().cpu())
        labels = oracle.decode(skips).argmax(1).flatten().cpu()
        counts += torch.bincount(labels, minlength=num_classes).double()
    return torch.cat(embeddings), counts / counts.sum()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), via symmetric eigensolves."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


@torch.no_grad()
def generate_uint8(G: StyleGAN2Generator, seeds: range, device: torch.device, batch_size: int = 250) -> torch.Tensor:
    """Images for NVIDIA-style seeds (z from RandomState(seed)), psi 1, constant noise."""
    out = []
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        z = zs_from_seeds(chunk, G.z_dim).to(device)
        images = G.synthesis(G.mapping(z, None), noise_mode="const")
        out.append((images * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out)


class WorldFD:
    """Callable quality figure for the trainer: world-FD, its floor and part coverage per class."""

    def __init__(self, oracle: nn.Module, world: str, resolution: int, device: torch.device, n: int = 2000):
        self.oracle, self.device, self.n = oracle, device, n
        self.class_names = [c.name for c in get_world(world).classes]
        real, _ = render_split(world, "real_test", 2 * n, resolution)
        self.real, self.real_shares = read(oracle, real[:n], device, len(self.class_names))
        self.floor = frechet_distance(self.real, read(oracle, real[n:], device, len(self.class_names))[0])

    def __call__(self, G: StyleGAN2Generator) -> dict[str, float | dict[str, float]]:
        return self.score(generate_uint8(G, range(self.n), self.device))

    def score(self, images: torch.Tensor) -> dict[str, float | dict[str, float]]:
        """The figures for n uint8 images [n,3,R,R]."""
        fake, shares = read(self.oracle, images, self.device, len(self.class_names))
        coverage = shares / self.real_shares.clamp(min=1e-12)
        return {"world_fd": round(frechet_distance(self.real, fake), 4), "world_fd_floor": round(self.floor, 4),
                "part_coverage": {name: round(float(c), 3) for name, c in zip(self.class_names, coverage)}}
