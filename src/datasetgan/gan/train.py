"""Training a StyleGAN2 on a procedural world or a folder of images, on a CPU in hours.

StyleGAN2's recipe at small scale: non-saturating logistic loss, lazy R1 on real images,
style mixing, an exponential moving average (EMA) of the generator with a ramp-up, Adam
(0.0025, betas 0 / 0.99). Path-length regularisation is left out: it roughly doubles the
cost of a generator step and matters little at 64 px.

A run lives in one folder: `checkpoint.safetensors` (everything needed to resume, replaced
atomically every few minutes), `snapshots/network-KKKKKK.safetensors` (EMA generators in
the project's generator format), `samples/` (grids of fixed seeds) and `log.jsonl`.
The batch of step k depends only on (seed, k): a resumed run is the run it continues.
A run whose state is gone can begin again from its generator (`init_generator`): D starts
afresh, and may learn alone for the first `d_warmup_kimg`.
"""

import contextlib
import copy
import json
import math
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from datasetgan.errors import DatasetGANError
from datasetgan.fileio import save_tensors
from datasetgan.formats.masks import save_image
from datasetgan.gan.augment import check_policy, diff_augment
from datasetgan.gan.data import ImageSource, Prefetched
from datasetgan.gan.discriminator import Discriminator
from datasetgan.generators.base import zs_from_seeds
from datasetgan.generators.checkpoint import save_generator
from datasetgan.generators.stylegan2 import StyleGAN2Generator
from datasetgan.progress import progress_bar
from datasetgan.viz import grid

SAMPLE_SEEDS = range(32)
OPTIMISERS = ("opt_G", "opt_D")  # checkpoint key prefixes of the optimisers' state
CHECKPOINT = "checkpoint.safetensors"  # a run folder's whole training state


class GANConfig(BaseModel):
    """Everything that defines a training run; stored in every checkpoint."""

    resolution: int = 64
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 4
    channel_base: int = 2048  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 128
    d_channel_base: int | None = Field(None, ge=16)  # the discriminator's channel_base; None: the generator's
    batch_size: int = 32
    g_lr: float = 0.0025  # Adam learning rates (StyleGAN2: 0.0025 for both)
    d_lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 0.03
    r1_interval: int = 16
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05
    style_mixing: float = Field(0.9, ge=0.0, le=1.0)
    augment: str = ""  # DiffAugment policies, e.g. "color,translation,cutout"
    total_kimg: float = 400.0
    snapshot_kimg: float = 10.0
    checkpoint_minutes: float = 5.0
    patience: int = Field(0, ge=0)  # stop after this many snapshots without a new best world-FD (0: run on)
    patience_kimg: float = Field(0.0, ge=0.0)  # stop after this many kimg without a new best world-FD (0: run on)
    fd_window: int = Field(1, ge=1)  # the stopping rule reads world-FD's running median over this many snapshots
    min_improvement: float = Field(0.02, ge=0.0, lt=1.0)  # the relative drop in world-FD that is a new best
    lr_decay_kimg: float = Field(0.0, ge=0.0)  # from this kimg on, both learning rates halve every lr_half_life_kimg
    lr_half_life_kimg: float = Field(0.0, ge=0.0)  # 0: constant learning rates
    fused_modconv: bool = False  # True: per-sample grouped conv (slower on CPU, for comparison)
    channels_last: bool = True  # False: the plain NCHW layout (slower on CPU, for comparison)
    seed: int = 0
    source: str = Field("world:faces", description="world:NAME or images:DIR")
    init_generator: str = ""  # warm start: G and G_ema begin as this generator (builtin:NAME or a file)
    d_warmup_kimg: float = 0.0  # D alone learns first, so that a fresh D does not misguide a trained G

    @model_validator(mode="after")
    def _every_layer_has_a_channel(self) -> "GANConfig":
        for option, base in (("channel_base", self.channel_base), ("d_channel_base", self.d_channel_base)):
            if base is not None and base < self.resolution:  # channels at the top: base // resolution
                raise ValueError(f"{option} {base} leaves no channel at {self.resolution} px: "
                                 f"give at least the resolution, {self.resolution}")
        return self


def build_generator(cfg: GANConfig) -> StyleGAN2Generator:
    return StyleGAN2Generator(
        z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.resolution, img_channels=3,
        mapping_kwargs={"num_layers": cfg.mapping_layers},
        synthesis_kwargs={"channel_base": cfg.channel_base, "channel_max": cfg.channel_max,
                          "num_fp16_res": 0, "conv_clamp": None},
    )


def config_for(network: StyleGAN2Generator, **settings) -> GANConfig:
    """A run config whose generator has the architecture of `network` (for a warm start)."""
    kwargs = network.init_kwargs
    synthesis = kwargs["synthesis_kwargs"]
    architecture = dict(resolution=kwargs["img_resolution"], z_dim=kwargs["z_dim"], w_dim=kwargs["w_dim"],
                        mapping_layers=kwargs["mapping_kwargs"].get("num_layers", 8),
                        channel_base=synthesis.get("channel_base", 32768),
                        channel_max=synthesis.get("channel_max", 512))
    return GANConfig(**{**settings, **architecture})


def build_discriminator(cfg: GANConfig) -> Discriminator:
    return Discriminator(cfg.resolution, channel_base=cfg.d_channel_base or cfg.channel_base,
                         channel_max=cfg.channel_max)


class Trainer:
    """Holds the networks and optimisers of one run; `step()` is one G and one D update."""

    def __init__(self, cfg: GANConfig, source: ImageSource, device: torch.device):
        check_policy(cfg.augment)
        self.cfg, self.source, self.device = cfg, source, device
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
            torch.manual_seed(cfg.seed)
            self.G = build_generator(cfg).to(device, memory_format=self.memory_format).train()
            self.D = build_discriminator(cfg).to(device, memory_format=self.memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.g_lr, betas=cfg.betas, eps=1e-8)
        # lazy R1 runs every r1_interval steps: rescale D's Adam as StyleGAN2 does
        ratio = cfg.r1_interval / (cfg.r1_interval + 1)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr * ratio,
                                      betas=tuple(b**ratio for b in cfg.betas), eps=1e-8)
        self.base_lrs = ((self.opt_G, cfg.g_lr), (self.opt_D, cfg.d_lr * ratio))
        self.step_index, self.seconds = 0, 0.0

    @property
    def memory_format(self) -> torch.memory_format:
        # channels-last: ~1.5x faster convolutions on CPU (oneDNN), fine on GPU too
        return torch.channels_last if self.cfg.channels_last else torch.contiguous_format

    def start_from(self, network: StyleGAN2Generator) -> None:
        """Warm start: G and G_ema take the weights of a trained generator of the same shape."""
        try:
            self.G.load_state_dict(network.state_dict(), strict=True)
        except RuntimeError as exc:
            raise DatasetGANError(f"{self.cfg.init_generator} does not fit this run's generator config: {exc}") from exc
        self.G_ema.load_state_dict(network.state_dict(), strict=True)

    @property
    def kimg(self) -> float:
        return self.step_index * self.cfg.batch_size / 1000

    def _rng(self, phase: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + self.step_index) * 4 + phase)

    def _generate(self, rng: torch.Generator, update_emas: bool) -> torch.Tensor:
        """A batch of fakes with style mixing: past a random cutoff, ws come from a second z."""
        cfg = self.cfg
        z = torch.randn(2, cfg.batch_size, cfg.z_dim, generator=rng).to(self.device)
        ws = self.G.mapping(z[0], None, update_emas=update_emas)
        if torch.rand((), generator=rng) < cfg.style_mixing:
            cutoff = int(torch.randint(1, ws.shape[1], (), generator=rng))
            ws = torch.cat([ws[:, :cutoff], self.G.mapping(z[1], None)[:, cutoff:]], dim=1)
        return self.G.synthesis(ws, noise_mode="random", fused_modconv=cfg.fused_modconv)

    def _discriminate(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return self.D(diff_augment(images, self.cfg.augment, rng) if self.cfg.augment else images)

    def step(self) -> dict[str, float]:
        # the synthesis noise draws from torch's global RNG: seed it per step, then restore it
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((self.cfg.seed * 1_000_003 + self.step_index) * 4 + 2)
            return self._step()

    def lr_scale(self) -> float:
        """The learning rates' share of their configured values at this step (the decay schedule)."""
        cfg = self.cfg
        if not cfg.lr_half_life_kimg:
            return 1.0
        return 0.5 ** (max(0.0, self.kimg - cfg.lr_decay_kimg) / cfg.lr_half_life_kimg)

    def _step(self) -> dict[str, float]:
        cfg, stats = self.cfg, {}
        for optimiser, lr in self.base_lrs:  # set every step: checkpoints keep no learning rate
            for group in optimiser.param_groups:
                group["lr"] = lr * self.lr_scale()
        # Discriminator: fakes down, reals up, and every r1_interval steps the R1 penalty
        rng = self._rng(0)
        real = self.source.batch(self.step_index, cfg.batch_size).to(self.device, memory_format=self.memory_format)
        with torch.no_grad():
            fake = self._generate(rng, update_emas=False)
        do_r1 = self.step_index % cfg.r1_interval == 0
        real.requires_grad_(do_r1)
        real_logits = self._discriminate(real, rng)
        loss_D = F.softplus(self._discriminate(fake, rng)).mean() + F.softplus(-real_logits).mean()
        if do_r1:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean()
            loss_D = loss_D + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval
            stats["r1"] = r1.item()
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()
        stats.update(loss_D=loss_D.item())
        if self.kimg < cfg.d_warmup_kimg:
            self.step_index += 1
            return stats
        # Generator: non-saturating loss
        rng = self._rng(1)
        self.D.requires_grad_(False)
        loss_G = F.softplus(-self._discriminate(self._generate(rng, update_emas=True), rng)).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        self.D.requires_grad_(True)
        self._update_ema()
        self.step_index += 1
        stats.update(loss_G=loss_G.item())
        return stats

    @torch.no_grad()
    def _update_ema(self) -> None:
        cfg = self.cfg
        half_life = cfg.ema_kimg * 1000
        if cfg.ema_rampup > 0 and not cfg.init_generator:  # short memory early, while G changes fast
            half_life = min(half_life, (self.step_index + 1) * cfg.batch_size * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch_size / max(half_life, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # ---- checkpoints -------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for prefix, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        for prefix, opt in zip(OPTIMISERS, (self.opt_G, self.opt_D)):
            for index, state in opt.state_dict()["state"].items():
                tensors.update({f"{prefix}.{index}.{k}": torch.as_tensor(v) for k, v in state.items()})
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def save(self, path: Path) -> None:
        meta = {"config": self.cfg.model_dump_json(), "step": str(self.step_index), "seconds": f"{self.seconds:.1f}",
                "format": "datasetgan.gan-checkpoint"}
        tensors = self.state_tensors()
        save_tensors(path, tensors, meta)

    def load(self, path: Path) -> None:
        tensors = load_file(path, device="cpu")
        for prefix, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        for prefix, opt in zip(OPTIMISERS, (self.opt_G, self.opt_D)):
            state = opt.state_dict()  # a checkpoint without optimiser state (`weights_only`) starts them afresh
            per_param: dict[int, dict] = {}
            for key, value in tensors.items():
                if key.startswith(prefix + "."):
                    index, name = key[len(prefix) + 1:].split(".", 1)
                    per_param.setdefault(int(index), {})[name] = value.to(self.device) if name != "step" else value
            state["state"] = per_param
            opt.load_state_dict(state)
        with safe_open(path, "pt") as handle:
            meta = handle.metadata()
        self.step_index, self.seconds = int(meta["step"]), float(meta["seconds"])


def weights_only(checkpoint: Path, out: Path) -> None:
    """A run's checkpoint without the optimisers' moments: G, D and G_ema with the config and step.

    Small enough to commit (no Adam moments: half the size). Copied into a run folder as
    checkpoint.safetensors it resumes with `--resume`; Adam starts afresh there, and with
    beta1 = 0 its second moments re-warm within a few hundred steps.
    """
    read_checkpoint_config(checkpoint)  # a one-line error for anything else
    with safe_open(checkpoint, "pt") as handle:
        meta = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys() if not key.startswith(OPTIMISERS)}
    save_tensors(out, tensors, meta)


def read_checkpoint_config(path: Path) -> GANConfig:
    try:
        with safe_open(path, "pt") as handle:
            meta = handle.metadata() or {}
        return GANConfig.model_validate_json(meta["config"])
    except (OSError, KeyError, ValueError, SafetensorError) as exc:
        raise DatasetGANError(f"{path}: not a GAN training checkpoint ({exc})") from exc


@torch.no_grad()
def sample_grid(G: StyleGAN2Generator, device: torch.device, seeds=SAMPLE_SEEDS, columns: int = 8) -> np.ndarray:
    z = zs_from_seeds(seeds, G.z_dim).to(device)
    images = G.synthesis(G.mapping(z, None), noise_mode="const")
    tiles = (images.clamp(-1, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return grid(list(tiles), columns)


def since_best(scored: list[tuple[float, float]], min_improvement: float, window: int = 1) -> tuple[int, float]:
    """Snapshots and kimg since the last new best of scores (lower is better) given as (kimg, score):
    a new best beats the best before it by at least `min_improvement` of its value, so noise-sized
    gains do not count, and with `window` > 1 the scores are first smoothed by a running median of
    that many snapshots, so a single lucky or unlucky snapshot neither sets nor breaks a best."""
    best, best_kimg, since = math.inf, 0.0, 0
    for index, (kimg, _) in enumerate(scored):
        smoothed = statistics.median(score for _, score in scored[max(0, index + 1 - window) : index + 1])
        if smoothed < best * (1 - min_improvement):
            best, best_kimg, since = smoothed, kimg, 0
        else:
            since += 1
    return since, (scored[-1][0] - best_kimg if scored else 0.0)


def stop_reason(cfg: GANConfig, scored: list[tuple[float, float]]) -> str | None:
    """Why training should stop now, given the world-FD of every snapshot so far (kimg, FD); None: go on."""
    snapshots, kimg = since_best(scored, cfg.min_improvement, cfg.fd_window)
    curve = f"world-FD (running median of {cfg.fd_window} snapshots)" if cfg.fd_window > 1 else "world-FD"
    if cfg.patience and snapshots >= cfg.patience:
        return f"{curve} has not improved by {cfg.min_improvement:.0%} for {cfg.patience} snapshots"
    if cfg.patience_kimg and kimg >= cfg.patience_kimg:
        return f"{curve} has not improved by {cfg.min_improvement:.0%} for {kimg:.0f} kimg"
    return None


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event that SIGINT (Ctrl-C) and SIGTERM (a scheduler's time limit) set instead of killing:
    the loop then ends its step and saves, and the run resumes exactly where it stopped. Signal
    handlers belong to the main thread: elsewhere the event is never set."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {number: signal.signal(number, lambda *_: requested.set())
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def train(cfg: GANConfig, source: ImageSource, run_dir: str | Path, device: torch.device, resume: bool = False,
          evaluate: Callable[[StyleGAN2Generator], dict[str, object]] | None = None,
          loader_workers: int = 0) -> Trainer:
    """Train until cfg.total_kimg, checkpointing every few minutes, at every snapshot and when
    stopped by SIGINT or SIGTERM.

    `evaluate(G_ema)` (e.g. world-FD) runs at every snapshot and its numbers go to the log;
    with `cfg.patience` or `cfg.patience_kimg`, training stops once world-FD has not improved
    for that many snapshots or kimg (`stop_reason`). `loader_workers` processes render the
    real batches ahead (`Prefetched`): the same batches, for a GPU that outpaces the renderer.
    """
    run_dir = Path(run_dir)
    for sub in ("snapshots", "samples"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    checkpoint, log = run_dir / CHECKPOINT, run_dir / "log.jsonl"
    if checkpoint.exists() and not resume:
        raise DatasetGANError(f"{run_dir} already holds a run: pass --resume to continue it or choose another --run")
    if log.exists() and not checkpoint.exists():  # its history would count toward --patience
        raise DatasetGANError(f"{run_dir} holds the log.jsonl of a run without its checkpoint, which cannot be "
                              "resumed: choose another --run, or move the old log away")
    trainer = Trainer(cfg, source, device)
    if checkpoint.exists():
        trainer.load(checkpoint)
    elif cfg.init_generator:
        from datasetgan.generators.registry import load_network_ref

        trainer.start_from(load_network_ref(cfg.init_generator))
    steps_total = math.ceil(cfg.total_kimg * 1000 / cfg.batch_size)
    ahead = (Prefetched(source, cfg.batch_size, range(trainer.step_index, steps_total), loader_workers)
             if loader_workers else contextlib.nullcontext(source))
    with stop_requests() as stop, ahead as trainer.source:
        _loop(trainer, steps_total, run_dir, evaluate, stop)
    trainer.source = source  # the read-ahead workers are gone
    return trainer


def _loop(trainer: Trainer, steps_total: int, run_dir: Path, evaluate: Callable | None,
          stop: threading.Event) -> None:
    """Steps, snapshots and checkpoints until the last step, a stopping rule or a stop request."""
    cfg, device = trainer.cfg, trainer.device
    checkpoint, log = run_dir / CHECKPOINT, run_dir / "log.jsonl"
    steps_per_snapshot = max(1, round(cfg.snapshot_kimg * 1000 / cfg.batch_size))
    scored = [(record["kimg"], record["world_fd"]) for record in read_log(log) if "world_fd" in record]
    last_save = time.monotonic()
    bar = progress_bar(total=steps_total, initial=trainer.step_index, unit="step")
    while trainer.step_index < steps_total:
        started = time.monotonic()
        stats = trainer.step()
        trainer.seconds += time.monotonic() - started
        rate = trainer.kimg / max(trainer.seconds / 3600, 1e-9)
        losses = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in stats.items() if k.startswith("loss_"))
        bar.set_postfix_str(f"kimg {trainer.kimg:.1f} ({rate:.0f}/h) {losses}")
        bar.update(1)
        at_snapshot = trainer.step_index % steps_per_snapshot == 0 or trainer.step_index == steps_total
        if at_snapshot:
            tag = f"{round(trainer.kimg):06d}"
            save_generator(trainer.G_ema, run_dir / "snapshots" / f"network-{tag}.safetensors")
            save_image(run_dir / "samples" / f"fakes-{tag}.png", sample_grid(trainer.G_ema, device))
            record = {"kimg": round(trainer.kimg, 3), "seconds": round(trainer.seconds, 1),
                      "sec_per_kimg": round(trainer.seconds / max(trainer.kimg, 1e-9), 2), **stats}
            if evaluate is not None:
                record.update(evaluate(trainer.G_ema))
                bar.write(json.dumps(record))
            with open(log, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            scored += [(record["kimg"], record["world_fd"])] if "world_fd" in record else []
        if at_snapshot or stop.is_set() or time.monotonic() - last_save > cfg.checkpoint_minutes * 60:
            trainer.save(checkpoint)
            last_save = time.monotonic()
        if stop.is_set():
            bar.write(f"stopped by a signal at {trainer.kimg:.3f} kimg, checkpoint saved: --resume continues")
            break
        reason = stop_reason(cfg, scored) if at_snapshot else None
        if reason:
            best_kimg, best_fd = min(scored, key=lambda item: item[1])
            bar.write(f"{reason}: stopping at {trainer.kimg:.1f} kimg; the lowest, {best_fd:.3f}, is the snapshot "
                      f"of {best_kimg:.0f} kimg")
            break
    bar.close()
