"""world-FD's Frechet distance on Gaussians whose answer is known in closed form, and the
figures the trainer logs (world-FD, part coverage) on world images with the built-in oracle."""

import pytest
import torch

from datasetgan.gan.quality import WorldFD, frechet_distance
from datasetgan.worlds.oracle import load_oracle, render_split


def test_identical_sets_have_zero_distance():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_mean_shift_adds_its_squared_length():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.arange(8, dtype=torch.float64) / 4
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift.square().sum()), rel=1e-6)


def test_scaled_covariance_matches_closed_form():
    # same mean, covariance I vs 4I (exactly, after whitening): FD = d * (1 + 4 - 2 * 2) = d
    x = torch.randn(2000, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x - x.mean(0)
    x = x @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(x.T))).T  # whiten: covariance exactly I
    assert frechet_distance(x, 2 * x) == pytest.approx(4.0, rel=1e-6)


def _faces_metric(n: int):
    device = torch.device("cpu")
    return WorldFD(load_oracle("faces", 64, device), "faces", 64, device, n=n)


def test_world_images_score_as_the_world():
    metric = _faces_metric(32)
    real, _ = render_split("faces", "real_test", 32, 64)
    figures = metric.score(real)
    assert figures["world_fd"] == pytest.approx(0.0, abs=1e-6)
    assert figures["world_fd"] < figures["world_fd_floor"]
    assert figures["part_coverage"] == {name: 1.0 for name in metric.class_names}


def test_faces_without_parts_have_no_part_coverage():
    metric = _faces_metric(32)
    real, labels = render_split("faces", "real_test", 32, 64)
    skin = metric.class_names.index("skin")
    parts = [metric.class_names.index(name) for name in ("eye", "mouth")]
    # paint every eye and mouth pixel with that image's mean skin colour
    blank = real.clone()
    for image, label in zip(blank, labels):
        colour = image[:, label == skin].float().mean(1).round().to(torch.uint8)
        hole = torch.isin(label, torch.tensor(parts))
        image[:, hole] = colour[:, None]
    coverage = metric.score(blank)["part_coverage"]
    assert all(coverage[metric.class_names[p]] < 0.5 for p in parts)  # edge pixels still read as parts
    assert coverage["skin"] > 1.0
