import math

import pytest
import torch

from datasetgan.errors import DatasetGANError
from datasetgan.uncertainty import entropy, image_scores, mutual_information, vote


def pixel(*members: list[float]) -> torch.Tensor:
    """Probabilities `[M, 1, C, 1, 1]` of one pixel from each member's distribution."""
    return torch.tensor(members, dtype=torch.float32)[:, None, :, None, None]


def test_members_that_agree_have_no_mutual_information():
    probs = pixel([0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.7, 0.2, 0.1])
    assert mutual_information(probs).shape == (1, 1, 1)
    assert mutual_information(probs).item() == pytest.approx(0.0, abs=1e-6)


def test_two_confident_members_that_disagree_give_ln2():
    assert mutual_information(pixel([1.0, 0.0], [0.0, 1.0])).item() == pytest.approx(math.log(2), abs=1e-6)


def test_uniform_members_have_no_mutual_information():
    assert mutual_information(pixel([0.25] * 4, [0.25] * 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_mutual_information_is_non_negative_on_random_members():
    probs = torch.randn(5, 2, 4, 6, 6).softmax(2)
    mi = mutual_information(probs)
    assert mi.shape == (2, 6, 6)
    assert (mi >= 0).all()
    assert (mi <= math.log(4) + 1e-6).all()


def test_entropy_of_a_certain_distribution_is_zero():
    assert entropy(torch.tensor([1.0, 0.0, 0.0]), dim=0).item() == 0.0


def test_image_score_is_the_mean_of_the_top_tenth():
    uncertainty = torch.arange(100, dtype=torch.float32).view(1, 10, 10)  # top 10 % = 90..99
    assert image_scores(uncertainty).tolist() == [pytest.approx(94.5)]
    assert image_scores(uncertainty, top_fraction=0.02).tolist() == [pytest.approx(98.5)]
    assert image_scores(uncertainty, top_fraction=1.0).tolist() == [pytest.approx(49.5)]


def test_image_score_takes_at_least_one_pixel_and_rejects_bad_fractions():
    assert image_scores(torch.tensor([[[0.0, 3.0]]]), top_fraction=0.01).tolist() == [3.0]
    with pytest.raises(DatasetGANError):
        image_scores(torch.zeros(1, 2, 2), top_fraction=0.0)


def test_vote_takes_the_majority():
    probs = pixel([0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.0, 0.1, 0.9])
    assert vote(probs).tolist() == [[[0]]]
    assert vote(probs).dtype == torch.int64


def test_vote_breaks_ties_by_mean_probability():
    # Classes 0 and 1 get two votes each; class 1 has the higher mean probability. Class 2 has
    # the highest mean of all but only one vote: it must not win the tie.
    probs = pixel(
        [0.40, 0.30, 0.30],
        [0.40, 0.35, 0.25],
        [0.05, 0.50, 0.45],
        [0.00, 0.51, 0.49],
        [0.00, 0.00, 1.00],
    )
    assert probs.mean(0).argmax().item() == 2
    assert vote(probs).item() == 1
    swapped = probs[:, :, [1, 0, 2]]
    assert vote(swapped).item() == 0
