"""world-FD's Frechet distance on Gaussians whose answer is known in closed form."""

import pytest
import torch

from datasetgan.gan.quality import frechet_distance


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
