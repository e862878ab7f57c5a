"""world-FD: the Frechet distance between generated and world images, measured in the
feature space of the world oracle (as FID does with Inception, but for our own domain).

The floor is the distance between two disjoint sets of world images of the same size:
a generator cannot be told apart from the world below it.

Beside it, part coverage: for each class, the share of pixels the oracle labels as that
class on generated images over the share it labels on world images. A generator that draws
faces without mouths has a low world-FD long before its mouth coverage reaches 1.

What the samples miss, read two more ways (issue: muted, brownish samples of a world with pink
hair and checkered backgrounds scored a fine world-FD):
- improved precision and recall (Kynkaanniemi et al. 2019) in the same pooled features: each
  set's manifold is the union of balls reaching each point's 3rd nearest neighbour; precision is
  the share of generated images inside the world's manifold, recall the share of world images
  inside the generated one. Two disjoint world sets give the real-vs-real values to aim at.
- attribute coverage: the world reports exactly what it drew (hair colour, background kind ...);
  softmax heads on the oracle's descriptors of an image, fitted on the floor's world images,
  read them on generated images. Per value, its share on generated images over its share on
  held-out world images (both as the heads read them, so their errors cancel), and per
  attribute the total-variation distance of the two distributions; the floor is the distance
  between the exact attributes of the two world sets (sampling noise alone).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasetgan.generators.base import zs_from_seeds
from datasetgan.generators.stylegan2 import StyleGAN2Generator
from datasetgan.segment.models import normalize
from datasetgan.worlds import get_world
from datasetgan.worlds.oracle import render_split

NEIGHBOURS = 3  # k of the k-NN manifolds (Kynkaanniemi et al.)


@dataclass
class Reading:
    """What the oracle sees in a set of images (one encoder and decoder pass)."""

    embeddings: torch.Tensor  # [N, D] its deepest features, pooled: world-FD's and precision/recall's space
    descriptors: torch.Tensor  # [N, F] every encoder level pooled, mean and spread of colour per class, class shares
    shares: torch.Tensor  # [num_classes] the share of all pixels it labels as each class


@torch.no_grad()
def read(oracle: nn.Module, images: torch.Tensor, device: torch.device, num_classes: int,
         batch_size: int = 250) -> Reading:
    """uint8 [N,3,H,W] -> the oracle's reading of them (float64)."""
    oracle.eval()
    embeddings, descriptors, counts = [], [], torch.zeros(num_classes, dtype=torch.float64)
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size].to(device)
        skips = oracle.encode(normalize(chunk))
        embeddings.append(skips[-1].mean(dim=(2, 3)).double().cpu())
        labels = oracle.decode(skips).argmax(1)
        counts += torch.bincount(labels.flatten().cpu(), minlength=num_classes).double()
        descriptors.append(torch.cat([*(skip.mean(dim=(2, 3)) for skip in skips),
                                      _colours_per_class(chunk, labels, num_classes)], dim=1).double().cpu())
    return Reading(torch.cat(embeddings), torch.cat(descriptors), counts / counts.sum())


def _colours_per_class(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[N, 7 * num_classes]: per class, the mean and spread of each colour channel and the pixel share
    (hair colour lives in the hair pixels; stripes show as spread)."""
    masks = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()  # [N,K,H,W]
    pixels = masks.sum(dim=(2, 3))
    rgb = images.float() / 255
    mean = torch.einsum("nkhw,nchw->nkc", masks, rgb) / pixels.clamp(min=1)[..., None]
    square = torch.einsum("nkhw,nchw->nkc", masks, rgb.square()) / pixels.clamp(min=1)[..., None]
    spread = (square - mean.square()).clamp(min=0).sqrt()
    return torch.cat([mean.flatten(1), spread.flatten(1), pixels / labels[0].numel()], dim=1)


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


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall of `fake` against `real` ([N, D] each, k-NN manifolds)."""
    def radii(points: torch.Tensor) -> torch.Tensor:  # the k-th neighbour; the (k+1)-th distance counts itself
        return torch.cdist(points, points).kthvalue(k + 1, dim=1).values

    def inside(manifold: torch.Tensor, queries: torch.Tensor) -> float:
        return float((torch.cdist(queries, manifold) <= radii(manifold)).any(dim=1).double().mean())

    return inside(real, fake), inside(fake, real)


def shares(indices: torch.Tensor, values: int) -> torch.Tensor:
    """The share of each of `values` values among `indices` (float64 [values])."""
    return torch.bincount(torch.as_tensor(indices).long(), minlength=values).double() / len(indices)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p - q).abs().sum() / 2)


class AttributeProbe:
    """One softmax head per attribute on standardised oracle descriptors, fitted with L-BFGS from
    zero weights (deterministic, no seed needed) in a few seconds."""

    def __init__(self, descriptors: torch.Tensor, attributes: dict[str, np.ndarray],
                 values: dict[str, tuple[str, ...]], weight_decay: float = 1e-2):
        self.mean, self.std = descriptors.mean(0), descriptors.std(0) + 1e-6
        x = self._standardise(descriptors)
        self.heads = {name: self._fit(x, torch.as_tensor(attributes[name]).long(), len(names), weight_decay)
                      for name, names in values.items()}

    def _standardise(self, descriptors: torch.Tensor) -> torch.Tensor:
        return (descriptors - self.mean) / self.std

    @staticmethod
    def _fit(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
        weight = torch.zeros(x.shape[1], classes, dtype=x.dtype, requires_grad=True)
        bias = torch.zeros(classes, dtype=x.dtype, requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimiser.zero_grad()
            value = F.cross_entropy(x @ weight + bias, y) + weight_decay * weight.square().sum()
            value.backward()
            return value

        with torch.enable_grad():
            optimiser.step(loss)
        return weight.detach(), bias.detach()

    def predict(self, descriptors: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self._standardise(descriptors)
        return {name: (x @ weight + bias).argmax(1) for name, (weight, bias) in self.heads.items()}


class WorldFD:
    """Callable quality figure for the trainer: world-FD and its floor, precision and recall beside
    their real-vs-real values, part coverage per class and attribute coverage per value."""

    def __init__(self, oracle: nn.Module, world: str, resolution: int, device: torch.device, n: int = 2000):
        self.oracle, self.device, self.n = oracle, device, n
        source = get_world(world)
        self.class_names = [c.name for c in source.classes]
        self.values: dict[str, tuple[str, ...]] = source.attribute_values
        real, _ = render_split(world, "real_test", 2 * n, resolution)
        exact = source.attributes(list(source.seed_ranges["real_test"][: 2 * n]))
        self.real, other = self.read(real[:n]), self.read(real[n:])
        self.floor = frechet_distance(self.real.embeddings, other.embeddings)
        self.real_precision, self.real_recall = precision_recall(self.real.embeddings, other.embeddings)
        self.probe = AttributeProbe(other.descriptors, {k: v[n:] for k, v in exact.items()}, self.values)
        predicted = self.probe.predict(self.real.descriptors)
        self.real_attributes = {k: shares(predicted[k], len(names)) for k, names in self.values.items()}
        self.probe_accuracy = {k: float((predicted[k].numpy() == exact[k][:n]).mean()) for k in self.values}
        self.attribute_floor = {k: total_variation(shares(exact[k][:n], len(names)), shares(exact[k][n:], len(names)))
                                for k, names in self.values.items()}

    def read(self, images: torch.Tensor) -> Reading:
        return read(self.oracle, images, self.device, len(self.class_names))

    def __call__(self, G: StyleGAN2Generator) -> dict[str, float | dict[str, float]]:
        return self.score(generate_uint8(G, range(self.n), self.device))

    def score(self, images: torch.Tensor) -> dict[str, float | dict]:
        """The figures for n uint8 images [n,3,R,R]."""
        fake = self.read(images)
        coverage = fake.shares / self.real.shares.clamp(min=1e-12)
        precision, recall = precision_recall(self.real.embeddings, fake.embeddings)
        predicted = self.probe.predict(fake.descriptors)
        attributes = {k: shares(predicted[k], len(names)) for k, names in self.values.items()}
        return {
            "world_fd": round(frechet_distance(self.real.embeddings, fake.embeddings), 4),
            "world_fd_floor": round(self.floor, 4),
            "precision": round(precision, 4), "recall": round(recall, 4),
            "precision_real_vs_real": round(self.real_precision, 4), "recall_real_vs_real": round(self.real_recall, 4),
            "part_coverage": {name: round(float(c), 3) for name, c in zip(self.class_names, coverage)},
            "attribute_coverage": {
                k: {value: round(float(f / r), 3) if r > 0 else None
                    for value, f, r in zip(names, attributes[k], self.real_attributes[k])}
                for k, names in self.values.items()},
            "attribute_tv": {k: round(total_variation(attributes[k], self.real_attributes[k]), 4) for k in self.values},
            "attribute_tv_floor": {k: round(v, 4) for k, v in self.attribute_floor.items()},
            "attribute_probe_accuracy": {k: round(v, 3) for k, v in self.probe_accuracy.items()},
        }
