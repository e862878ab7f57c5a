import json

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from datasetgan.errors import DatasetGANError
from datasetgan.features import feature_channels, gather
from datasetgan.interpreter import (
    _SHUFFLE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    InterpreterConfig,
    StyleInterpreter,
    _member_generator,
)

from references import hypercolumns, predict_probs_naive

LEVELS = [(8, 4), (8, 8), (6, 8), (5, 16), (4, 16), (3, 32)]
SIZE = 16


@pytest.fixture(autouse=True)
def one_thread():
    # These ops are tiny: on a shared 2-core machine thread hand-offs cost more than they save.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_pyramid(n: int = 2, seed: int = 0, levels=LEVELS) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, r, r, generator=generator) for c, r in levels]


def toy_masks(pyramid, size: int = SIZE) -> torch.Tensor:
    """Labels that are a function of the features: signs of two hypercolumn channels."""
    columns = hypercolumns(pyramid, size)
    return (columns[:, 8] > 0).long() + 2 * (columns[:, 30] > 0).long()  # level 1 and level 4


def config(**overrides) -> InterpreterConfig:
    settings = dict(num_classes=4, members=3, min_epochs=1, patience=10, max_epochs=8, seed=0)
    return InterpreterConfig(**(settings | overrides))


def trained(cfg: InterpreterConfig | None = None, pyramid=None) -> StyleInterpreter:
    pyramid = pyramid or random_pyramid()
    interpreter = StyleInterpreter(cfg or config(), feature_channels(pyramid))
    interpreter.fit(pyramid, toy_masks(pyramid), progress=False)
    return interpreter


def randomise(interpreter: StyleInterpreter, seed: int = 3) -> StyleInterpreter:
    """Random weights, biases and BatchNorm statistics, so that no layer is trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in interpreter.state_dict().items():
            values = torch.rand(tensor.shape, generator=generator)
            tensor.copy_(values + 0.5 if name.endswith("running_var") else (values - 0.5) * 0.4)
    return interpreter.eval()


# ---- configuration ----


def test_hidden_sizes_follow_the_number_of_classes():
    assert InterpreterConfig(num_classes=31).hidden == (128, 32)
    assert InterpreterConfig(num_classes=32).hidden == (256, 128)
    assert InterpreterConfig(num_classes=5, hidden=(16, 8)).hidden == (16, 8)


def test_config_defaults_are_the_papers():
    cfg = InterpreterConfig(num_classes=5)
    assert (cfg.members, cfg.lr, cfg.batch_size, cfg.min_epochs, cfg.patience) == (10, 1e-3, 64, 4, 50)
    assert cfg.ignore_index == 255


@pytest.mark.parametrize(
    "bad",
    [dict(num_classes=1), dict(num_classes=300), dict(ignore_index=2), dict(min_epochs=9), dict(extra=1),
     dict(min_steps=-1)],
)
def test_bad_configs_are_rejected(bad):
    with pytest.raises(ValidationError):
        config(**bad)


# ---- the members ----


def test_members_start_from_normal_002_weights_and_differ():
    interpreter = StyleInterpreter(config(members=4, hidden=(128, 32)), [64, 64])
    weight = interpreter.ensemble.fc1.weight
    assert weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert weight.mean().abs().item() < 1e-3
    assert interpreter.ensemble.fc1.bias.abs().max() == 0
    assert not torch.equal(weight[0], weight[1])


def test_same_seed_same_weights():
    first, second, other = trained(), trained(), trained(config(seed=1))
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.ensemble.fc1.weight, other.ensemble.fc1.weight)


def standalone(interpreter: StyleInterpreter, m: int) -> nn.Sequential:
    """Member m as textbook PyTorch layers, with the member's current weights."""
    ensemble, (h1, h2) = interpreter.ensemble, interpreter.config.hidden
    dim, classes = sum(interpreter.level_channels), interpreter.config.num_classes
    net = nn.Sequential(
        nn.Linear(dim, h1), nn.ReLU(), nn.BatchNorm1d(h1),
        nn.Linear(h1, h2), nn.ReLU(), nn.BatchNorm1d(h2), nn.Linear(h2, classes),
    )  # fmt: skip
    with torch.no_grad():
        for layer, ours in zip(
            (net[0], net[3], net[6]), (ensemble.fc1, ensemble.fc2, ensemble.fc3), strict=True
        ):
            layer.weight.copy_(ours.weight[m].T)
            layer.bias.copy_(ours.bias[m, 0])
        for layer, ours in zip((net[2], net[5]), (ensemble.bn1, ensemble.bn2), strict=True):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(layer, name).copy_(getattr(ours, name)[m])
    return net


def train_standalone(net: nn.Sequential, cfg: InterpreterConfig, m: int, pyramid, masks, steps: int) -> None:
    """The paper's training of one member, written independently: Adam, CE, uniform shuffle.

    Hypercolumns come from `gather` (tested against the naive ones elsewhere): with the naive
    ones, their last-bit differences grow through Adam, which divides by tiny gradients.
    """
    n, size = masks.shape[0], masks.shape[-1]
    images, ys, xs = torch.meshgrid(torch.arange(n), torch.arange(size), torch.arange(size), indexing="ij")
    columns = gather(pyramid, ys.flatten(), xs.flatten(), size, images.flatten())
    targets = masks.flatten()
    pixels = (targets != cfg.ignore_index).nonzero().squeeze(1)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    shuffle = _member_generator(cfg.seed, m, _SHUFFLE)
    net.train()
    while steps:
        order = pixels[torch.randperm(len(pixels), generator=shuffle)]
        for start in range(0, len(order) - 1, cfg.batch_size):  # no single-pixel batch
            batch = order[start : start + cfg.batch_size]
            loss = F.cross_entropy(net(columns[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps -= 1
            if not steps:
                return


def test_parallel_ensemble_equals_independent_trainings():
    pyramid = random_pyramid()
    masks = toy_masks(pyramid)
    masks.view(-1)[:191] = 255  # 321 labelled pixels: 5 batches of 64 and a lone pixel to skip
    cfg = config(min_epochs=1, patience=2, max_epochs=6, lr=0.01)  # members stop early, apart
    interpreter = StyleInterpreter(cfg, feature_channels(pyramid))
    members = [standalone(interpreter, m) for m in range(cfg.members)]
    history = interpreter.fit(pyramid, masks, progress=False)

    assert history.pixels == 321
    assert history.batches == max(history.member_batches) < 6 * 5
    assert min(history.member_batches) < history.batches  # a member stopped before the others
    assert all(steps >= 5 + 2 for steps in history.member_batches)  # epoch 0, then 2 without a minimum
    for m, net in enumerate(members):
        train_standalone(net, cfg, m, pyramid, masks, history.member_batches[m])
        ours = standalone(interpreter, m)
        for (name, expected), got in zip(net.state_dict().items(), ours.state_dict().values(), strict=True):
            if name.endswith("num_batches_tracked"):
                continue
            assert (expected - got).abs().max() < 1e-5, (m, name)


def test_min_steps_is_honoured_by_every_member_even_past_max_epochs():
    pyramid = random_pyramid()
    masks = toy_masks(pyramid)
    masks.view(-1)[:191] = 255  # 321 labelled pixels: 5 batches of 64 a epoch
    early = config(min_epochs=1, patience=2, max_epochs=6, lr=0.01)
    without = StyleInterpreter(early, feature_channels(pyramid)).fit(pyramid, masks, progress=False)
    assert min(without.member_batches) < 40
    for min_steps in (12, 40):  # within the 6 epochs of 5 steps, and past them
        cfg = config(min_epochs=1, patience=2, max_epochs=6, lr=0.01, min_steps=min_steps)
        history = StyleInterpreter(cfg, feature_channels(pyramid)).fit(pyramid, masks, progress=False)
        assert all(steps >= min(min_steps + 2, 40) for steps in history.member_batches)  # +2 without a minimum
    assert history.batches == 40 and len(history.epoch_losses) == 8  # the cap moved to min_steps, not beyond


def test_learns_a_toy_task():
    pyramid = random_pyramid(n=6)
    interpreter = StyleInterpreter(config(members=4, min_epochs=3, patience=30), feature_channels(pyramid))
    history = interpreter.fit(pyramid, toy_masks(pyramid), progress=False)
    assert history.epoch_losses[-1] < history.epoch_losses[0] / 5

    def accuracy(pyramid) -> float:
        return (interpreter.label(pyramid).mask.long() == toy_masks(pyramid)).float().mean().item()

    assert accuracy(pyramid) > 0.97
    assert accuracy(random_pyramid(seed=7)) > 0.9  # unseen images


def test_a_half_precision_pyramid_trains_like_a_float_one():
    pyramid = random_pyramid(n=4)
    half = [level.half() for level in pyramid]
    full_result = trained(pyramid=pyramid).label(pyramid).mask
    half_result = trained(pyramid=half).label(half).mask
    assert (full_result == half_result).float().mean().item() > 0.97


# ---- inference ----


# 4: no level is coarser than the grid (all resized or native); 13: some are downsampled.
@pytest.mark.parametrize("size", [SIZE, 32, 13, 37, 4])
def test_factorised_inference_equals_naive(size):
    pyramid = random_pyramid(n=3)
    interpreter = randomise(StyleInterpreter(config(hidden=(12, 6)), feature_channels(pyramid)))
    naive = predict_probs_naive(interpreter, pyramid, size)
    assert naive.shape == (3, 3, 4, size, size)
    assert (interpreter.predict_probs(pyramid, size) - naive).abs().max() < 1e-5
    # Tiny chunks: one pixel at a time; then bands of 7 pixels, the last one short.
    assert (interpreter.predict_probs(pyramid, size, chunk_elements=1) - naive).abs().max() < 1e-5
    bands = interpreter.predict_probs(pyramid, size, chunk_elements=7 * 3 * 12)
    assert (bands - naive).abs().max() < 1e-5


def test_factorised_inference_in_groups_of_members():
    pyramid = random_pyramid()
    interpreter = randomise(StyleInterpreter(config(hidden=(200, 6)), feature_channels(pyramid)))
    naive = predict_probs_naive(interpreter, pyramid, 13)
    # 200 first-layer channels a member: members go two by two, the last one alone
    assert (interpreter.predict_probs(pyramid, 13) - naive).abs().max() < 1e-5


def test_factorised_inference_reads_half_precision():
    pyramid = [level.half() for level in random_pyramid()]
    interpreter = randomise(StyleInterpreter(config(hidden=(12, 6)), feature_channels(pyramid)))
    naive = predict_probs_naive(interpreter, pyramid, 24)
    assert naive.dtype == torch.float32
    assert (interpreter.predict_probs(pyramid, 24) - naive).abs().max() < 1e-5


def test_label_gives_vote_uncertainty_and_scores():
    pyramid = random_pyramid(n=3)
    result = trained().label(pyramid)
    assert result.mask.shape == (3, SIZE, SIZE) and result.mask.dtype == torch.uint8
    assert int(result.mask.max()) < 4
    assert result.uncertainty.shape == (3, SIZE, SIZE) and (result.uncertainty >= 0).all()
    assert result.scores.shape == (3,)


# ---- persistence ----


def test_save_load_round_trip(tmp_path):
    interpreter = trained()
    interpreter.save(tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["level_channels"] == [c for c, _ in LEVELS]
    assert meta["config"]["feature_resolution"] == SIZE
    loaded = StyleInterpreter.load(tmp_path, device="cpu", num_classes=4)
    pyramid = random_pyramid(seed=5)
    assert torch.equal(loaded.predict_probs(pyramid), interpreter.predict_probs(pyramid))


def test_load_reports_what_to_fix(tmp_path):
    trained().save(tmp_path)
    with pytest.raises(DatasetGANError, match="4 classes"):
        StyleInterpreter.load(tmp_path, device="cpu", num_classes=5)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["level_channels"][0] += 1
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(DatasetGANError, match="does not match"):
        StyleInterpreter.load(tmp_path, device="cpu")
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(DatasetGANError, match="missing"):
        StyleInterpreter.load(tmp_path, device="cpu")
    with pytest.raises(DatasetGANError, match="missing"):
        StyleInterpreter.load(tmp_path / "nowhere")
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(DatasetGANError, match="not a style interpreter config"):
        StyleInterpreter.load(tmp_path)


# ---- bad inputs ----


def test_a_pyramid_from_another_generator_is_rejected():
    interpreter = trained()
    other = random_pyramid(levels=[*LEVELS[:-1], (7, 32)])
    with pytest.raises(DatasetGANError, match="D=38"):
        interpreter.predict_probs(other)
    with pytest.raises(DatasetGANError, match="channels"):
        interpreter.fit(other, toy_masks(other), progress=False)


def test_bad_masks_are_rejected():
    pyramid = random_pyramid()
    interpreter = StyleInterpreter(config(feature_resolution=SIZE), feature_channels(pyramid))
    masks = toy_masks(pyramid)
    bad_label = masks.clone()
    bad_label[0, 0, 0] = 7
    cases = {
        "outside 0..3": bad_label,
        "one mask per image": masks[:1],
        "feature_resolution": toy_masks(pyramid, size=8),
        "fewer than 2": torch.full_like(masks, 255),
        "index maps": masks[0],
    }
    for message, bad in cases.items():
        with pytest.raises(DatasetGANError, match=message):
            interpreter.fit(pyramid, bad, progress=False)


def test_predicting_needs_a_feature_resolution():
    interpreter = StyleInterpreter(config(), [c for c, _ in LEVELS])
    with pytest.raises(DatasetGANError, match="feature resolution"):
        interpreter.predict_probs(random_pyramid())


def test_pyramid_with_levels_already_merged_is_accepted_and_misaligned_one_refused():
    from datasetgan.features import merge_levels

    g = torch.Generator().manual_seed(3)
    pyramid = [torch.randn(2, c, r, r, generator=g) for c, r in ((4, 4), (4, 8), (6, 8), (2, 16))]
    interpreter = StyleInterpreter(InterpreterConfig(num_classes=3, members=2, feature_resolution=16), [4, 4, 6, 2])
    merged = merge_levels(pyramid)
    assert len(merged) == 3
    assert torch.allclose(interpreter.predict_probs(merged), interpreter.predict_probs(pyramid), atol=1e-6)
    misaligned = [torch.randn(2, 6, 4, 4), torch.randn(2, 8, 8, 8), torch.randn(2, 2, 16, 16)]  # same D = 16
    with pytest.raises(DatasetGANError, match="channels"):
        interpreter.predict_probs(misaligned)
