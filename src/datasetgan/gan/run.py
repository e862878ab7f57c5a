"""A GAN training run as the user asks for it: its config (from options, or the one stored in its
checkpoint on resume), its images and its quality figure; and the scores of a run's snapshots.
The CLI parses options and calls these."""

from pathlib import Path
from typing import Callable, Iterator

import torch
from pydantic import ValidationError

from datasetgan.errors import DatasetGANError, summarize
from datasetgan.gan.data import open_source
from datasetgan.gan.quality import WorldFD
from datasetgan.gan.train import CHECKPOINT, GANConfig, Trainer, config_for, read_checkpoint_config, train
from datasetgan.generators.checkpoint import load_network
from datasetgan.generators.registry import load_network_ref
from datasetgan.worlds.oracle import builtin_oracle_path, load_oracle

# what a resumed run may change; everything else is the stored config's
RESUMABLE = ("total_kimg", "patience", "patience_kimg", "fd_window", "min_improvement", "lr_decay_kimg",
             "lr_half_life_kimg", "ema_kimg")
ARCHITECTURE = ("resolution", "channel_base", "channel_max")


def _validated(build: Callable[[], GANConfig]) -> GANConfig:
    try:
        return build()
    except ValidationError as exc:
        raise DatasetGANError(summarize(exc)) from exc


def run_config(run_dir: Path, resume: bool, world: str | None, images: Path | None, **options) -> GANConfig:
    """The config of the run in `run_dir`: on resume the stored one, with the RESUMABLE options given
    (None: not given); else a new one from the options and one source, --world or --images."""
    given = {key: value for key, value in options.items() if value is not None}
    checkpoint = Path(run_dir) / CHECKPOINT
    if resume and checkpoint.exists():
        stored = read_checkpoint_config(checkpoint).model_dump()
        return _validated(lambda: GANConfig(**{**stored, **{k: v for k, v in given.items() if k in RESUMABLE}}))
    if (world is None) == (images is None):
        raise DatasetGANError("give exactly one of --world NAME or --images DIR")
    settings = {**given, "source": f"world:{world}" if world else f"images:{images}"}
    init_generator = settings.get("init_generator")
    if not init_generator:
        return _validated(lambda: GANConfig(**settings))
    if any(settings.get(key, field.default) != field.default
           for key, field in GANConfig.model_fields.items() if key in ARCHITECTURE):
        raise DatasetGANError("--init-generator takes the architecture of that generator: "
                              "drop --resolution, --channel-base and --channel-max")
    network = load_network_ref(init_generator)  # the architecture is the given generator's
    return _validated(lambda: config_for(network, **{k: v for k, v in settings.items() if k not in ARCHITECTURE}))


def world_quality(cfg: GANConfig, device: torch.device) -> WorldFD | None:
    """The quality figure logged at snapshots: world-FD and the rest, when the run trains on a world
    that has a built-in oracle at its resolution."""
    kind, _, name = cfg.source.partition(":")
    if kind != "world" or not builtin_oracle_path(name, cfg.resolution).is_file():
        return None
    return WorldFD(load_oracle(name, cfg.resolution, device), name, cfg.resolution, device)


def train_run(cfg: GANConfig, run_dir: Path, device: torch.device, resume: bool, oracle: bool = True,
              announce: Callable[[str], None] | None = None, loader_workers: int = 0) -> Trainer:
    """Train (or resume) the run in `run_dir` on its config's source, scored at snapshots if `oracle`,
    with `loader_workers` processes rendering real batches ahead; `announce` hears what it trains on
    before the first step."""
    source = open_source(cfg.source, cfg.resolution, cfg.seed)
    evaluate = world_quality(cfg, device) if oracle else None
    if announce is not None:
        announce(f"training on {source.description}, run folder {run_dir}")
    return train(cfg, source, run_dir, device, resume=resume, evaluate=evaluate, loader_workers=loader_workers)


def score_snapshots(run_dir: Path, world: str, n: int, every: int, device: torch.device) -> Iterator[dict]:
    """The quality figures of every `every`-th snapshot of a run, with its kimg, in order."""
    snapshots = sorted((Path(run_dir) / "snapshots").glob("network-*.safetensors"))[::every]
    if not snapshots:
        raise DatasetGANError(f"no snapshots in {Path(run_dir) / 'snapshots'}")
    resolution = load_network(snapshots[0]).img_resolution
    metric = WorldFD(load_oracle(world, resolution, device), world, resolution, device, n)
    for path in snapshots:
        yield {"kimg": int(path.stem.split("-")[1]), **metric(load_network(path).to(device))}
