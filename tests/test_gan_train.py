"""The CPU GAN trainer: a few steps on a tiny config change the weights, and a resumed run
is exactly the run it continues."""

import json
import math
import shutil
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from datasetgan.errors import DatasetGANError
from datasetgan.gan.augment import check_policy, diff_augment
from datasetgan.gan.data import Prefetched
from datasetgan.gan.run import run_config, score_snapshots, train_run
from datasetgan.gan.train import (GANConfig, Trainer, read_checkpoint_config, read_log, since_best, stop_reason,
                                  train, weights_only)
from datasetgan.generators.checkpoint import load_network

CPU = torch.device("cpu")


class Blobs:
    """A deterministic toy source: a bright square on a dark field at a step-dependent place."""

    description = "blobs"

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(step)
        images = -torch.ones(batch_size, 3, 16, 16)
        for i, (y, x) in enumerate(torch.randint(0, 10, (batch_size, 2), generator=g).tolist()):
            images[i, :, y : y + 6, x : x + 6] = 1
        return images


def tiny(**update) -> GANConfig:
    base = dict(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=32,
                batch_size=8, r1_interval=2, total_kimg=0.032, snapshot_kimg=0.016)
    return GANConfig(**{**base, **update})


def weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for t in module.state_dict().values()]


def test_steps_change_generator_and_discriminator():
    trainer = Trainer(tiny(), Blobs(), CPU)
    g0, d0 = weights(trainer.G), weights(trainer.D)
    stats = [trainer.step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(s["loss_D"])) for s in stats) and "r1" in stats[0]
    assert any(not torch.equal(a, b) for a, b in zip(g0, weights(trainer.G)))
    assert any(not torch.equal(a, b) for a, b in zip(d0, weights(trainer.D)))


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    interrupted, straight = tmp_path / "a", tmp_path / "b"
    train(tiny(total_kimg=0.032), Blobs(), interrupted, CPU)
    resumed = train(tiny(total_kimg=0.056), Blobs(), interrupted, CPU, resume=True)
    reference = train(tiny(total_kimg=0.056), Blobs(), straight, CPU)
    assert resumed.step_index == reference.step_index == 7
    for module in ("G", "D", "G_ema"):
        for a, b in zip(weights(getattr(resumed, module)), weights(getattr(reference, module))):
            assert torch.equal(a, b), module


def test_run_folder_holds_snapshots_samples_and_log(tmp_path):
    train(tiny(), Blobs(), tmp_path, CPU)
    snapshots = sorted((tmp_path / "snapshots").glob("*.safetensors"))
    assert snapshots and (tmp_path / "checkpoint.safetensors").is_file()
    assert list((tmp_path / "samples").glob("*.png"))
    network = load_network(snapshots[-1])  # a snapshot is an ordinary generator file
    assert network.img_resolution == 16
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[-1]["kimg"] == pytest.approx(0.032)


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    train(tiny(), Blobs(), tmp_path, CPU)
    with pytest.raises(DatasetGANError, match="--resume"):
        train(tiny(), Blobs(), tmp_path, CPU)


def test_a_log_left_without_its_checkpoint_is_not_mixed_into_a_new_run(tmp_path):
    train(tiny(), Blobs(), tmp_path, CPU)
    (tmp_path / "checkpoint.safetensors").unlink()
    log = (tmp_path / "log.jsonl").read_text()
    for resume in (False, True):
        with pytest.raises(DatasetGANError, match="another --run"):
            train(tiny(), Blobs(), tmp_path, CPU, resume=resume)
    assert (tmp_path / "log.jsonl").read_text() == log


def test_diff_augment_is_seeded_and_keeps_shape():
    x = torch.rand(4, 3, 16, 16)
    policy = "color,translation,cutout"
    a = diff_augment(x, policy, torch.Generator().manual_seed(1))
    b = diff_augment(x, policy, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    with pytest.raises(DatasetGANError, match="flip"):
        check_policy("color,flip")


def test_warm_start_begins_at_the_given_generator_and_warms_up_d_alone(tmp_path):
    source_run = train(tiny(), Blobs(), tmp_path / "first", CPU)
    init = sorted((tmp_path / "first" / "snapshots").glob("*.safetensors"))[-1]
    cfg = tiny(init_generator=str(init), d_warmup_kimg=0.016, total_kimg=0.016)
    warm = train(cfg, Blobs(), tmp_path / "warm", CPU)
    for a, b in zip(weights(warm.G), weights(source_run.G_ema)):  # two D-only steps: G untouched
        assert torch.equal(a, b)
    fresh_d = Trainer(cfg, Blobs(), CPU).D  # the D it began with
    assert any(not torch.equal(a, b) for a, b in zip(weights(warm.D), weights(fresh_d)))
    stats = warm.step()  # past the warm-up, G learns too
    assert "loss_G" in stats and any(not torch.equal(a, b) for a, b in zip(weights(warm.G), weights(source_run.G_ema)))


def test_warm_start_from_a_generator_of_another_shape_is_refused(tmp_path):
    train(tiny(), Blobs(), tmp_path / "first", CPU)
    init = sorted((tmp_path / "first" / "snapshots").glob("*.safetensors"))[-1]
    with pytest.raises(DatasetGANError, match="does not fit"):
        train(tiny(init_generator=str(init), channel_max=16), Blobs(), tmp_path / "warm", CPU)


def test_discriminator_width_is_its_own_and_survives_resume(tmp_path):
    cfg = tiny(d_channel_base=512, style_mixing=0.0)
    trainer = train(cfg, Blobs(), tmp_path, CPU)
    assert trainer.D.fromrgb.weight.shape[0] == 32 and trainer.G.synthesis.b16.conv0.weight.shape[0] == 16
    stored = read_checkpoint_config(tmp_path / "checkpoint.safetensors")  # as `gan train --resume` does
    resumed = train(stored.model_copy(update={"total_kimg": 0.048}), Blobs(), tmp_path, CPU, resume=True)
    assert resumed.cfg.d_channel_base == 512 and resumed.D.fromrgb.weight.shape[0] == 32


def test_only_improvements_beyond_the_threshold_reset_the_count():
    def snapshots(scores: list[float]) -> int:
        return since_best([(10.0 * (i + 1), score) for i, score in enumerate(scores)], 0.02)[0]

    assert snapshots([]) == 0
    assert snapshots([3.0, 2.0, 1.0]) == 0
    assert snapshots([1.0, 0.99, 0.985, 1.2]) == 3  # gains under 2 % are noise
    assert snapshots([1.0, 0.99, 0.97]) == 0  # 0.97 beats 1.0 by 3 %


def test_a_smoothed_curve_counts_kimg_since_its_last_new_best():
    falling = [3.0, 2.5, 2.0, 1.0, 1.9, 1.8, 1.7, 1.6]  # one lucky snapshot at 40 kimg
    scored = [(10.0 * (i + 1), score) for i, score in enumerate(falling)]
    assert since_best(scored, 0.02, window=1) == (4, 40.0)  # raw: the lucky 1.0 stays the best
    assert since_best(scored, 0.02, window=3) == (0, 0.0)  # medians 3, 2.75, 2.5, 2.0, 1.9, 1.8, 1.8, 1.7: falling
    flat = scored + [(90.0, 1.75), (100.0, 1.72)]  # medians 1.7, 1.72: no 2 % gain on 1.7
    assert since_best(flat, 0.02, window=3) == (2, 20.0)


# world-FD of run d, 10 to 290 kimg (MODEL.md): still falling fast, with a 30 kimg plateau at 200-220
RUN_D = [20.40, 16.09, 12.50, 6.88, 6.39, 6.45, 4.83, 4.39, 3.02, 2.46, 2.14, 1.90, 1.66, 1.40, 1.27, 1.18, 1.08,
         1.09, 1.02, 0.97, 0.97, 0.95, 0.83, 0.76, 0.71, 0.65, 0.65, 0.69, 0.68]


def noisy_curve(tail_snapshots: int, seed: int) -> list[tuple[float, float]]:
    """Run d's curve, then a flat tail at its last level, every snapshot times 1 +- 4 % (seeded)."""
    values = torch.tensor(RUN_D + [0.67] * tail_snapshots, dtype=torch.float64)
    noise = 1 + 0.04 * torch.randn(len(values), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return [(10.0 * (i + 1), float(v)) for i, v in enumerate(values * noise)]


def first_stop(cfg: GANConfig, scored: list[tuple[float, float]]) -> float | None:
    """The kimg at which the rule stops a run that logs `scored`, snapshot by snapshot."""
    return next((scored[i - 1][0] for i in range(1, len(scored) + 1) if stop_reason(cfg, scored[:i])), None)


@pytest.mark.parametrize("seed", range(5))
def test_patience_in_kimg_on_a_smoothed_curve_waits_out_plateaus_and_stops_on_a_flat_tail(seed):
    rule = GANConfig(patience_kimg=100, fd_window=5)
    assert first_stop(rule, noisy_curve(0, seed)) is None  # no stop while the curve falls
    stop = first_stop(rule, noisy_curve(40, seed))
    assert stop is not None and 290 < stop <= 290 + 3 * 100  # in the tail, within a few patiences


def test_patience_in_snapshots_on_the_raw_curve_stops_on_noise():
    """Today's rule (3 snapshots, 2 %) on the same curves stops some of them while they fall."""
    stops = [first_stop(GANConfig(patience=3), noisy_curve(0, seed)) for seed in range(5)]
    assert any(stop is not None for stop in stops)


def test_learning_rates_halve_every_half_life_after_the_decay_starts():
    trainer = Trainer(tiny(lr_decay_kimg=0.016, lr_half_life_kimg=0.008), Blobs(), CPU)
    lrs = []
    for _ in range(5):  # 8 images a step: 0, 0.008, ... 0.032 kimg
        trainer.step()
        lrs.append(trainer.opt_G.param_groups[0]["lr"] / trainer.cfg.g_lr)
    assert lrs == pytest.approx([1, 1, 1, 0.5, 0.25])
    d_ratio = trainer.opt_D.param_groups[0]["lr"] / trainer.cfg.d_lr  # D keeps its lazy-R1 rescaling
    assert d_ratio == pytest.approx(0.25 * trainer.cfg.r1_interval / (trainer.cfg.r1_interval + 1))
    assert Trainer(tiny(), Blobs(), CPU).lr_scale() == 1.0  # no schedule by default


class FlatQuality:
    """A quality figure that never improves, as world-FD does once a run has converged."""

    def __call__(self, G) -> dict[str, float]:
        return {"world_fd": 1.0}


def test_training_stops_once_world_fd_stops_improving_and_resume_remembers(tmp_path):
    cfg = tiny(total_kimg=0.2, snapshot_kimg=0.008, patience=2)  # a snapshot every step
    stopped = train(cfg, Blobs(), tmp_path, CPU, evaluate=FlatQuality())
    assert stopped.step_index == 3  # the first score sets the best, two more fail to beat it
    resumed = train(cfg, Blobs(), tmp_path, CPU, resume=True, evaluate=FlatQuality())
    assert resumed.step_index == 4  # the log's history counts: one more flat snapshot stops it
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 4
    assert read_checkpoint_config(tmp_path / "checkpoint.safetensors").patience == 2


@pytest.mark.parametrize("channel_base", [64, 128, 256, 512])
def test_every_small_width_the_config_accepts_trains(channel_base):
    """1 to 8 channels at 64 px: torch's strided 1x1 convolution on channels-last inputs with
    under 8 channels corrupts the heap on this CPU, and D's residual skip no longer uses it."""
    cfg = GANConfig(resolution=64, z_dim=16, w_dim=16, mapping_layers=2, channel_base=channel_base,
                    channel_max=32, batch_size=8, r1_interval=2)
    trainer = Trainer(cfg, Noise64(), CPU)
    stats = [trainer.step() for _ in range(2)]  # the first step has R1's double backward
    assert all(torch.isfinite(torch.tensor([s["loss_D"], s["loss_G"]])).all() for s in stats)


@pytest.mark.parametrize("option", ["channel_base", "d_channel_base"])
def test_a_width_with_no_channel_at_full_resolution_is_refused(option):
    with pytest.raises(ValueError, match=f"{option} 32 leaves no channel at 64 px"):
        GANConfig(resolution=64, **{option: 32})


class Noise64:
    description = "noise"

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        return torch.rand(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(step)) * 2 - 1


FROZEN = Path(__file__).parent / "data" / "gan-checkpoint-efde960.safetensors"


def test_a_checkpoint_written_by_earlier_code_resumes_and_steps(tmp_path):
    """tests/data/gan-checkpoint-efde960.safetensors was written once by the trainer of commit
    efde960 (tiny(z_dim=8, w_dim=8, channel_base=128, channel_max=16, d_channel_base=256), Blobs,
    two steps) and is never rewritten: the trainer of today must take it as it is."""
    shutil.copy(FROZEN, tmp_path / "checkpoint.safetensors")
    stored = read_checkpoint_config(tmp_path / "checkpoint.safetensors")
    frozen = load_file(FROZEN)
    resumed = Trainer(stored, Blobs(), CPU)
    resumed.load(tmp_path / "checkpoint.safetensors")  # strict: every name and shape must match
    assert resumed.step_index == 2
    for prefix in ("G", "D", "G_ema"):
        for name, value in getattr(resumed, prefix).state_dict().items():
            assert torch.equal(value, frozen[f"{prefix}.{name}"]), f"{prefix}.{name}"
    trainer = train(stored.model_copy(update={"total_kimg": 0.032}), Blobs(), tmp_path, CPU, resume=True)
    assert trainer.step_index == 4
    assert any(not torch.equal(a, b) for a, b in zip(weights(trainer.G), weights(resumed.G)))
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["loss_D"]) and math.isfinite(record["loss_G"])


def write_pngs(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = torch.randint(0, 256, (20, 24, 3), generator=torch.Generator().manual_seed(i), dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return folder


TINY_OPTIONS = dict(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=32,
                    batch_size=8, r1_interval=2, total_kimg=0.016, snapshot_kimg=0.008)


def test_a_run_from_options_trains_and_resumes_with_its_stored_config(tmp_path):
    folder, run_dir = write_pngs(tmp_path / "pictures"), tmp_path / "run"
    cfg = run_config(run_dir, False, None, folder, patience=None, **TINY_OPTIONS)
    assert cfg.source == f"images:{folder}" and cfg.patience == 0  # None: not given, the default
    heard = []
    train_run(cfg, run_dir, CPU, resume=False, announce=heard.append)
    assert heard == [f"training on images:{folder} (4 images), run folder {run_dir}"]
    resumed = run_config(run_dir, True, None, None, total_kimg=0.024, batch_size=4, patience_kimg=50, ema_kimg=20)
    assert resumed == cfg.model_copy(update={"total_kimg": 0.024, "patience_kimg": 50, "ema_kimg": 20})  # not batch
    assert train_run(resumed, run_dir, CPU, resume=True).step_index == 3
    assert len(read_log(run_dir / "log.jsonl")) == 3


@pytest.mark.parametrize("sources, options, message", [
    ((None, None), {}, "give exactly one of --world NAME or --images DIR"),
    (("faces", Path("pictures")), {}, "give exactly one of --world NAME or --images DIR"),
    (("faces", None), {"style_mixing": 1.5}, "style_mixing"),
    (("faces", None), {"fd_window": 0}, "fd_window"),
    (("faces", None), {"init_generator": "builtin:faces64", "channel_base": 512}, "drop --resolution"),
])
def test_bad_run_options_are_refused_in_one_line(tmp_path, sources, options, message):
    with pytest.raises(DatasetGANError, match=message) as caught:
        run_config(tmp_path, False, *sources, **options)
    assert "\n" not in str(caught.value)


def test_a_warm_start_takes_its_generators_architecture(tmp_path):
    cfg = run_config(tmp_path, False, "faces", None, init_generator="builtin:faces64", resolution=64, total_kimg=5.0)
    assert (cfg.channel_base, cfg.z_dim, cfg.total_kimg) == (2048, 128, 5.0)


def test_scoring_a_run_without_snapshots_is_refused(tmp_path):
    with pytest.raises(DatasetGANError, match="no snapshots in"):
        next(score_snapshots(tmp_path, "faces", 8, 1, CPU))


def test_weights_only_checkpoint_resumes_with_fresh_optimisers(tmp_path):
    trained = train(tiny(total_kimg=0.016), Blobs(), tmp_path / "a", CPU)
    weights_only(tmp_path / "a" / "checkpoint.safetensors", tmp_path / "w.safetensors")
    stored = load_file(tmp_path / "w.safetensors")
    assert stored and not any(key.startswith(("opt_G", "opt_D")) for key in stored)
    (tmp_path / "b").mkdir()
    shutil.copyfile(tmp_path / "w.safetensors", tmp_path / "b" / "checkpoint.safetensors")
    resumed = Trainer(tiny(), Blobs(), CPU)
    resumed.load(tmp_path / "b" / "checkpoint.safetensors")
    assert resumed.step_index == trained.step_index and not resumed.opt_G.state_dict()["state"]
    for module in ("G", "D", "G_ema"):
        pairs = zip(weights(getattr(resumed, module)), weights(getattr(trained, module)))
        assert all(torch.equal(a, b) for a, b in pairs), module
    continued = train(tiny(total_kimg=0.032), Blobs(), tmp_path / "b", CPU, resume=True)
    assert continued.step_index == 4 and continued.opt_G.state_dict()["state"]


def test_weights_only_refuses_a_file_that_is_no_checkpoint(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DatasetGANError, match="not a GAN training checkpoint"):
        weights_only(tmp_path / "x.safetensors", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_batches_rendered_ahead_by_workers_are_the_sources_and_train_the_same_run(tmp_path):
    with Prefetched(Blobs(), 8, range(2, 7), workers=2) as prefetched:
        for step in range(2, 7):
            assert torch.equal(prefetched.batch(step, 8), Blobs().batch(step, 8))
    with pytest.raises(RuntimeError, match="step order"), Prefetched(Blobs(), 8, range(2, 7), workers=1) as prefetched:
        prefetched.batch(3, 8)
    ahead = train(tiny(), Blobs(), tmp_path / "a", CPU, loader_workers=2)
    unaided = train(tiny(), Blobs(), tmp_path / "b", CPU)
    for module in ("G", "D", "G_ema"):
        for a, b in zip(weights(getattr(ahead, module)), weights(getattr(unaided, module))):
            assert torch.equal(a, b), module


class Interrupting(Blobs):
    """Sends this process SIGINT (as Ctrl-C does) while rendering the batch of one step."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        if step == self.at_step:
            signal.raise_signal(signal.SIGINT)
        return super().batch(step, batch_size)


def test_ctrl_c_ends_the_step_saves_and_the_resumed_run_is_the_uninterrupted_one(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # Python's handler, or SIG_IGN in a background job
    stopped = train(tiny(total_kimg=0.056), Interrupting(at_step=2), tmp_path / "a", CPU)
    assert stopped.step_index == 3  # the step under way finished, no further one began
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C behaves as before again
    resumed = train(tiny(total_kimg=0.056), Blobs(), tmp_path / "a", CPU, resume=True)
    reference = train(tiny(total_kimg=0.056), Blobs(), tmp_path / "b", CPU)
    assert resumed.step_index == reference.step_index == 7
    for module in ("G", "D", "G_ema"):
        for a, b in zip(weights(getattr(resumed, module)), weights(getattr(reference, module))):
            assert torch.equal(a, b), module
