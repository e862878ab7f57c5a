"""world-FD's Frechet distance on Gaussians whose answer is known in closed form, precision and
recall against a direct count, and the figures the trainer logs (world-FD, precision, recall,
part and attribute coverage) on world images with the built-in oracle."""

import pytest
import torch

from datasetgan.gan.quality import WorldFD, frechet_distance, precision_recall
from datasetgan.worlds import get_world
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


def _inside_by_counting(manifold: torch.Tensor, queries: torch.Tensor, k: int) -> float:
    """The share of queries within some manifold point's k-th neighbour distance, one pair at a time."""
    radii = [sorted(float((p - q).norm()) for q in manifold)[k] for p in manifold]  # [0] is p itself
    hits = [any(float((q - p).norm()) <= r for p, r in zip(manifold, radii)) for q in queries]
    return sum(hits) / len(hits)


def test_precision_and_recall_match_a_direct_count():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(60, 3, generator=g, dtype=torch.float64), torch.randn(50, 3, generator=g).double() + 0.7
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == pytest.approx(_inside_by_counting(real, fake, 3))
    assert recall == pytest.approx(_inside_by_counting(fake, real, 3))


def test_a_generator_that_drops_modes_keeps_precision_and_loses_recall():
    g = torch.Generator().manual_seed(3)
    real, other = torch.randn(2, 1000, 4, generator=g, dtype=torch.float64)
    narrow = 0.3 * torch.randn(1000, 4, generator=g, dtype=torch.float64)  # the middle of the world only
    reference, dropped = precision_recall(real, other), precision_recall(real, narrow)
    assert dropped[0] > 0.95 and dropped[1] < reference[1] / 2
    assert precision_recall(real, real) == (1.0, 1.0)


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
    assert figures["precision"] == figures["recall"] == 1.0
    assert 0 < figures["recall_real_vs_real"] <= 1 and 0 < figures["precision_real_vs_real"] <= 1
    assert all(tv == 0.0 for tv in figures["attribute_tv"].values())
    for attribute, coverage in figures["attribute_coverage"].items():
        assert set(coverage) == set(metric.values[attribute])
        assert all(ratio in (1.0, None) for ratio in coverage.values())  # None: a value the reading never gave


def test_a_world_without_patterned_backgrounds_shows_in_attribute_coverage():
    metric = _faces_metric(200)
    world = get_world("faces")
    real, _ = render_split("faces", "real_test", 200, 64)
    plain = world.attributes(list(world.seed_ranges["real_test"][:200]))["background"] == 0
    figures = metric.score(real[torch.from_numpy(plain)])
    coverage = figures["attribute_coverage"]["background"]
    assert coverage["plain"] > 1.2 and coverage["striped"] < 0.5 and coverage["checked"] < 0.5
    assert figures["attribute_tv"]["background"] > 2 * figures["attribute_tv_floor"]["background"]
    assert figures["attribute_tv"]["background"] > max(figures["attribute_tv"][k] for k in ("clothes", "facial_hair"))
    assert figures["precision"] == 1.0  # every image is one of the world's own


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


def test_the_world_reports_the_attributes_it_drew_per_seed():
    world = get_world("faces")
    seeds = list(range(3000))
    attributes = world.attributes(seeds)
    alone = world.attributes(seeds[7:8])
    assert all(alone[name][0] == values[7] for name, values in attributes.items())  # a seed's own, in any batch
    background = torch.bincount(torch.from_numpy(attributes["background"]), minlength=3).double() / len(seeds)
    expected = torch.tensor([0.65, 0.35 * 0.6, 0.35 * 0.4], dtype=torch.float64)  # stripes 35 %, of which checks 40 %
    assert torch.allclose(background, expected, atol=0.03)
    for name, values in world.attribute_values.items():
        assert attributes[name].min() >= 0 and attributes[name].max() < len(values)


def test_the_trainer_logs_every_figure_at_each_snapshot(tmp_path):
    from datasetgan.gan.data import WorldImages
    from datasetgan.gan.train import GANConfig, read_log, train

    cfg = GANConfig(resolution=64, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16,
                    batch_size=4, r1_interval=2, total_kimg=0.008, snapshot_kimg=0.004)
    world = get_world("faces")
    train(cfg, WorldImages("faces", 64), tmp_path, torch.device("cpu"), evaluate=_faces_metric(16))
    records = read_log(tmp_path / "log.jsonl")
    assert [r["kimg"] for r in records] == [0.004, 0.008]
    for record in records:
        assert 0 <= record["precision"] <= 1 and 0 <= record["recall"] <= 1 and record["world_fd"] > 0
        assert set(record["attribute_tv"]) == set(world.attribute_values) == set(record["attribute_coverage"])
