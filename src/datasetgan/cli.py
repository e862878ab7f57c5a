"""The `datasetgan` command: a thin typer layer over the library, one sub-command per step."""

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import typer

from datasetgan.device import keep_freed_memory, resolve_device
from datasetgan.errors import DatasetGANError

if TYPE_CHECKING:
    from datasetgan.workspace import SamplingSettings

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
world_app = typer.Typer(help="The procedural worlds: exact ground truth for training and testing.", no_args_is_help=True)
oracle_app = typer.Typer(help="The world oracle: a segmenter fitted on thousands of world images.", no_args_is_help=True)
gan_app = typer.Typer(help="Train a StyleGAN2 on a world or a folder of images.", no_args_is_help=True)
generator_app = typer.Typer(help="Inspect and sample generators.", no_args_is_help=True)
segment_app = typer.Typer(help="Train a downstream segmenter and test it on real labelled images.",
                          no_args_is_help=True)
app.add_typer(world_app, name="world")
world_app.add_typer(oracle_app, name="oracle")
app.add_typer(gan_app, name="gan")
app.add_typer(generator_app, name="generator")
app.add_typer(segment_app, name="segment")

DeviceOption = typer.Option("auto", help="auto (CUDA if present, else CPU), cpu, or cuda[:N].")
TruncationCutoffOption = typer.Option(None, help="Truncate only the first N w slots (the coarse styles; the "
                                                 "paper's release: 8 of 18); default: all.")
ConditionOption = typer.Option(None, help="For a class-conditional generator: the class K to draw (0-based; "
                                          "`generator info` gives the count). Not a segmentation class.")
NoiseOption = typer.Option("const", help="const: the generator's stored noise for every sample; per_sample: noise "
                                         "drawn from each sample's seed, as the paper's release samples.")


def sampling_settings(psi: float, truncation_cutoff: int | None, noise: str) -> "SamplingSettings":
    """The workspace's `sampling` settings from command-line options; a bad value is a one-line error."""
    from pydantic import ValidationError

    from datasetgan.errors import summarize
    from datasetgan.workspace import SamplingSettings

    try:
        return SamplingSettings(psi=psi, truncation_cutoff=truncation_cutoff, noise=noise)
    except ValidationError as exc:
        raise DatasetGANError(f"invalid sampling option: {summarize(exc)}") from exc


def parse_seeds(text: str, what: str = "seeds") -> list[int]:
    """'0-15' or '1,4,7-9' -> a list of seeds (or of classes: `what` names the option)."""
    seeds: list[int] = []
    try:
        for part in filter(None, text.split(",")):
            low, _, high = part.partition("-")
            seeds.extend(range(int(low), int(high) + 1) if high else [int(low)])
    except ValueError as exc:
        raise DatasetGANError(f"cannot read {what} {text!r}: use a list like 0-15 or 1,4,7-9") from exc
    if not seeds:
        raise DatasetGANError(f"no {what} in {text!r}: use a list like 0-15 or 1,4,7-9")
    return seeds


def check_resolution(resolution: int) -> int:
    if resolution < 4 or resolution & (resolution - 1):
        raise DatasetGANError(f"resolution {resolution} is not a power of two (e.g. 32, 64, 128, 256)")
    return resolution


@world_app.command("render")
def world_render(
    out: Path = typer.Option(..., help="Output folder: images/, masks/ (palette PNG), classes.json."),
    n: int = typer.Option(16, "--n", help="Number of images."),
    world: str = typer.Option("faces", help="Which world."),
    resolution: int = typer.Option(64, help="Image size in pixels (a power of two)."),
    split: str = typer.Option("real_test", help="Named seed range: gan_train, real_train or real_test."),
    start: int = typer.Option(0, help="Offset of the first seed within the split."),
) -> None:
    """Render world images with their exact index masks."""
    from datasetgan.worlds import render_folder

    folder, written = render_folder(world, out, n, check_resolution(resolution), split, start)
    typer.echo(f"wrote {written} {world} images with masks to {folder}")


@world_app.command("preview")
def world_preview(
    out: Path = typer.Option(Path("world.png"), help="PNG to write: image and mask overlay side by side."),
    n: int = typer.Option(16, "--n", help="Number of images."),
    world: str = typer.Option("faces"),
    resolution: int = typer.Option(64),
    split: str = typer.Option("real_test"),
    scale: int = typer.Option(2, help="Pixel magnification."),
) -> None:
    """A picture of world images with their exact masks overlaid."""
    from datasetgan.formats.masks import save_image
    from datasetgan.worlds import preview

    save_image(out, preview(world, n, check_resolution(resolution), split, scale))
    typer.echo(f"wrote {out}")


@oracle_app.command("train")
def oracle_train(
    out: Path = typer.Option(None, help="Where to save the oracle (default: the package's built-in location)."),
    world: str = typer.Option("faces"),
    resolution: int = typer.Option(64),
    n_train: int = typer.Option(4000, help="World images to train on (real_train split)."),
    n_test: int = typer.Option(1000, help="World images to score on (real_test split)."),
    epochs: int = typer.Option(12),
    device: str = DeviceOption,
) -> None:
    """Fit the world oracle and report its mIoU on the real test split."""
    from datasetgan.worlds import get_world
    from datasetgan.worlds.oracle import (
        ORACLE_CONFIG,
        builtin_oracle_path,
        train_oracle,
    )

    check_resolution(resolution)
    out = out or builtin_oracle_path(world, resolution)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = ORACLE_CONFIG.model_copy(update={"epochs": epochs})
    _, scores = train_oracle(world, resolution, n_train, n_test, resolve_device(device), cfg, out)
    names = [c.name for c in get_world(world).classes]
    typer.echo(json.dumps({"oracle": str(out), **scores.as_dict(names)}, indent=2))


@oracle_app.command("eval")
def oracle_eval(
    world: str = typer.Option("faces"),
    resolution: int = typer.Option(64),
    n_test: int = typer.Option(1000),
    path: Path = typer.Option(None, help="Oracle file (default: the built-in one)."),
    device: str = DeviceOption,
) -> None:
    """Score the oracle on the world's real test split."""
    from datasetgan.segment.train import evaluate
    from datasetgan.worlds import get_world
    from datasetgan.worlds.oracle import load_oracle, render_split

    dev = resolve_device(device)
    model = load_oracle(world, resolution, dev, path)
    images, labels = render_split(world, "real_test", n_test, resolution)
    classes = get_world(world).classes
    scores = evaluate(model, images, labels, len(classes), dev)
    typer.echo(json.dumps(scores.as_dict([c.name for c in classes]), indent=2))


@oracle_app.command("annotate")
def oracle_annotate(
    directory: Path = typer.Argument(..., help="Workspace whose generator was trained on the world."),
    world: str = typer.Option("faces"),
    device: str = DeviceOption,
) -> None:
    """Annotate every unannotated candidate with the oracle (a stand-in for a person)."""
    from datasetgan.pipeline import Pipeline
    from datasetgan.worlds.oracle import annotate_candidates, load_oracle

    pipeline = Pipeline.open(directory, device)
    workspace = pipeline.workspace
    todo = sorted(set(workspace.candidate_ids()) - set(workspace.annotated_ids()))
    oracle = load_oracle(world, pipeline.generator.resolution, pipeline.device)
    annotate_candidates(workspace, oracle, todo, pipeline.device)
    typer.echo(f"annotated {len(todo)} candidates in {workspace.annotations_dir}")


@gan_app.command("train")
def gan_train(
    run: Path = typer.Option(Path("runs/gan"), help="Run folder: checkpoint, snapshots, samples, log."),
    world: str = typer.Option(None, help="Train on a procedural world (e.g. faces)."),
    images: Path = typer.Option(None, help="Or train on a folder of images."),
    resolution: int = typer.Option(64),
    kimg: float = typer.Option(400.0, help="Training length in thousands of real images shown."),
    batch: int = typer.Option(32),
    glr: float = typer.Option(0.0025, help="Generator learning rate (Adam)."),
    dlr: float = typer.Option(0.0025, help="Discriminator learning rate (Adam)."),
    channel_base: int = typer.Option(2048, help="Channels at resolution r: min(channel_base / r, channel_max)."),
    channel_max: int = typer.Option(128),
    d_channel_base: int = typer.Option(None, help="The discriminator's channel_base (default: the generator's)."),
    style_mixing: float = typer.Option(0.9, help="Probability of mixing two latents in a training batch."),
    augment: str = typer.Option("", help="DiffAugment policies for small folders, e.g. color,translation,cutout."),
    snapshot_kimg: float = typer.Option(10.0),
    oracle: bool = typer.Option(True, help="Log world-FD at snapshots when the world has an oracle."),
    patience: int = typer.Option(
        None, help="Stop once world-FD has not improved for this many snapshots (default 0: train to --kimg)."),
    patience_kimg: float = typer.Option(
        None, help="Stop once world-FD has not improved for this many kimg, e.g. 100 (default 0: train to --kimg)."),
    fd_window: int = typer.Option(
        None, help="The stopping rules read world-FD's running median over this many snapshots (default 1)."),
    min_improvement: float = typer.Option(
        None, help="The relative drop in world-FD that counts as an improvement (default 0.02)."),
    lr_decay_kimg: float = typer.Option(None, help="From this kimg on, learning rates decay (with --lr-half-life-kimg)."),
    lr_half_life_kimg: float = typer.Option(
        None, help="Learning rates halve every this many kimg after --lr-decay-kimg (default 0: constant)."),
    ema_kimg: float = typer.Option(
        None, help="Half-life of G's moving average in kimg (default 10); raised on --resume, it grows at 5 % "
                   "of the images shown up to the new value."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run from its last checkpoint; "
                                "--kimg, the stopping and schedule options above may change."),
    init_generator: str = typer.Option(
        "", help="Warm start a new run: G begins as this generator (builtin:NAME or a file, whose architecture "
                 "the run takes), D afresh."),
    d_warmup_kimg: float = typer.Option(0.0, help="Train D alone for this many kimg first (useful with a warm start)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
    loader_workers: int = typer.Option(
        0, min=0, help="Processes that render real batches ahead (on a GPU: several; the run is the same)."),
    device: str = DeviceOption,
) -> None:
    """Train a StyleGAN2 (checkpoints every few minutes and on Ctrl-C; --resume continues)."""
    from datasetgan.gan.run import run_config, train_run

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    cfg = run_config(
        run, resume, world, images, resolution=check_resolution(resolution), channel_base=channel_base,
        channel_max=channel_max, total_kimg=kimg, batch_size=batch, g_lr=glr, d_lr=dlr, augment=augment,
        d_channel_base=d_channel_base, style_mixing=style_mixing, snapshot_kimg=snapshot_kimg, seed=seed,
        init_generator=init_generator, d_warmup_kimg=d_warmup_kimg, patience=patience, patience_kimg=patience_kimg,
        fd_window=fd_window, min_improvement=min_improvement, lr_decay_kimg=lr_decay_kimg,
        lr_half_life_kimg=lr_half_life_kimg, ema_kimg=ema_kimg)
    train_run(cfg, run, dev, resume, oracle=oracle, announce=typer.echo, loader_workers=loader_workers)


@gan_app.command("fd")
def gan_fd(
    run: Path = typer.Argument(..., help="Run folder whose snapshots to score."),
    world: str = typer.Option("faces"),
    n: int = typer.Option(2000, help="Images per side."),
    every: int = typer.Option(1, help="Score every k-th snapshot."),
    device: str = DeviceOption,
) -> None:
    """Score each snapshot of a run: world-FD and its real-vs-real floor, precision and recall beside their
    real-vs-real values, part coverage per class and attribute coverage per value."""
    from datasetgan.gan.run import score_snapshots

    for record in score_snapshots(run, world, n, every, resolve_device(device)):
        typer.echo(json.dumps(record))


@gan_app.command("weights")
def gan_weights(
    run: Path = typer.Argument(..., help="Run folder whose checkpoint to export."),
    out: Path = typer.Option(..., help="The safetensors file to write."),
) -> None:
    """The run's G, D and G_ema without optimiser state: to commit, and to resume from (copy it into a run
    folder as checkpoint.safetensors, then `gan train --run FOLDER --resume`)."""
    from datasetgan.gan.train import CHECKPOINT, weights_only

    weights_only(run / CHECKPOINT, out)
    typer.echo(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB)")


@generator_app.command("sample")
def generator_sample(
    ref: str = typer.Argument(..., help="builtin:NAME or a generator file."),
    seeds: str = typer.Option("0-15", help="Seeds, e.g. 0-15 or 1,4,7-9."),
    psi: float = typer.Option(1.0, help="Truncation psi (1 = none)."),
    truncation_cutoff: int = TruncationCutoffOption,
    noise: str = NoiseOption,
    out: Path = typer.Option(Path("grid.png"), help="PNG grid to write."),
    columns: int = typer.Option(8),
    condition: int = ConditionOption,
    device: str = DeviceOption,
) -> None:
    """Write a grid of samples for the given seeds."""
    from datasetgan.formats.masks import save_image
    from datasetgan.generators.registry import load_generator
    from datasetgan.pipeline import sample_grid

    chosen = parse_seeds(seeds)
    sampling = sampling_settings(psi, truncation_cutoff, noise)
    save_image(out, sample_grid(load_generator(ref, device), chosen, sampling, columns, condition))
    typer.echo(f"wrote {len(chosen)} samples to {out}")


@app.command("init")
def init(
    directory: Path = typer.Argument(..., help="The workspace folder to create."),
    generator: str = typer.Option("builtin:faces64", help="builtin:NAME or a generator file."),
    classes: str = typer.Option("world:faces", help="world:NAME for a world's classes, or names 'background,skin,...'."),
    psi: float = typer.Option(0.7, help="Truncation psi for sampling."),
    truncation_cutoff: int = TruncationCutoffOption,
    noise: str = NoiseOption,
) -> None:
    """Create a workspace: config (generator, classes, settings) and its folders."""
    from datasetgan.generators.registry import load_network_ref
    from datasetgan.workspace import Workspace
    from datasetgan.worlds import parse_classes

    sampling = sampling_settings(psi, truncation_cutoff, noise)
    load_network_ref(generator)  # fail now, not at the first sample, if the generator is wrong
    workspace = Workspace.init(directory, generator, parse_classes(classes), sampling=sampling)
    names = ", ".join(c.name for c in workspace.config.classes)
    typer.echo(f"workspace {directory}: generator {generator}; {workspace.num_classes} classes: {names}")


@app.command("sample")
def sample(
    directory: Path = typer.Argument(..., help="Workspace folder."),
    n: int = typer.Option(20, "-n", help="Number of candidates."),
    seed: int = typer.Option(0, help="First seed; candidates use seed, seed+1, ..."),
    seeds: str = typer.Option(None, help="Or any seeds instead of -n and --seed, e.g. 3,17,40-45."),
    condition: int = ConditionOption,
    device: str = DeviceOption,
) -> None:
    """Sample candidates to annotate (image + seed + w latent stored together)."""
    from datasetgan.pipeline import Pipeline

    if seeds is None and n < 1:
        raise DatasetGANError(f"-n must be at least 1 (got {n})")
    chosen = parse_seeds(seeds) if seeds is not None else list(range(seed, seed + n))
    pipeline = Pipeline.open(directory, device)
    added = pipeline.sample(chosen, condition)
    typer.echo(f"{len(added)} new candidates in {pipeline.workspace.candidates_dir} "
               f"({len(chosen) - len(added)} already there)")


@app.command("train")
def train_interpreter(
    directory: Path = typer.Argument(..., help="Workspace folder."),
    device: str = DeviceOption,
) -> None:
    """Train the style interpreter (ensemble of pixel MLPs) on the annotated candidates."""
    from datasetgan.pipeline import Pipeline

    pipeline = Pipeline.open(directory, device)
    _, history, report = pipeline.train()
    typer.echo(json.dumps({**report, "batches": history.batches, "final_loss": history.epoch_losses[-1],
                           "saved": str(pipeline.workspace.interpreter_dir)}, indent=2))


def parse_shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        return int(index), int(count)
    except ValueError as exc:
        raise DatasetGANError(f"--shard {text!r}: use i/k, e.g. 0/4 for the first of four shards") from exc


@app.command("annotate")
def annotate(
    directory: Path = typer.Argument(..., help="Workspace folder."),
    port: int = typer.Option(8765, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback exposes the studio (no login)."),
    device: str = DeviceOption,
) -> None:
    """Paint masks for the candidates in the browser (the annotation studio)."""
    from datasetgan.annotate.server import serve
    from datasetgan.workspace import Workspace

    serve(Workspace.open(directory), host=host, port=port, device=device)


@app.command("generate")
def generate(
    directory: Path = typer.Argument(..., help="Workspace folder (with a trained interpreter)."),
    n: int = typer.Option(1000, "-n", help="Number of labelled samples."),
    name: str = typer.Option("synthetic", help="Dataset name: written to DIR/datasets/NAME."),
    drop_uncertain: float = typer.Option(0.1, help="Fraction of the most uncertain samples to mark as dropped."),
    first_seed: int = typer.Option(None, help="Seeds first_seed .. first_seed+n-1 (default 100000000: away from "
                                              "candidates)."),
    shard: str = typer.Option("0/1", help="i/k: generate only the i-th of k contiguous parts; `merge` joins them."),
    batch_size: int = typer.Option(8),
    condition: str = typer.Option(None, help="A conditional generator's classes to draw, e.g. 0,2,5 or 0-9: seed s "
                                             "gets the (s mod count)-th."),
    from_clusters: bool = typer.Option(False, "--from-clusters", help="Label with the discovered parts (DIR/parts/: "
                                       "`datasetgan discover` and its mapping.json) instead of the interpreter."),
    engine: str = typer.Option(None, help="local (this process), ray (a Ray cluster's workers: pip install "
                                          "'datasetgan[ray]'), or torchrun (one rank of `torchrun -m datasetgan "
                                          "generate`); default: torchrun when torchrun started it, else local."),
    address: str = typer.Option(None, help="--engine ray: the cluster to join, host:port, ray://host:port or auto "
                                           "(default: start one on this machine)."),
    workers: int = typer.Option(None, help="--engine ray: how many workers (default: as many as the cluster has "
                                           "room for: a GPU each, or --threads CPUs each)."),
    threads: int = typer.Option(None, min=1, help="torch threads in every worker (default: 1 per Ray worker, "
                                                  "torch's default otherwise); identical bytes need the same count."),
    device: str = DeviceOption,
) -> None:
    """Generate a labelled synthetic dataset (resumable: re-run the same command after a crash)."""
    from datasetgan.engines import GenerateJob, choose_engine
    from datasetgan.engines import generate as run_engine
    from datasetgan.factory import FIRST_SEED
    from datasetgan.formats.dataset import MANIFEST, read_manifest

    chosen = choose_engine(engine)
    conditions = None if condition is None else tuple(parse_seeds(condition, "--condition"))
    job = GenerateJob(str(directory), name, n, FIRST_SEED if first_seed is None else first_seed, drop_uncertain,
                      batch_size, conditions, from_clusters, device, threads)
    folder = run_engine(job, chosen, parse_shard(shard), address, workers)
    source = " (labelled by the discovered parts)" if from_clusters else ""
    if (folder / MANIFEST).exists():
        kept = len(read_manifest(folder))
        typer.echo(f"{folder}: {n} samples{source}, {kept} kept, {n - kept} most uncertain dropped")
    elif chosen == "torchrun":
        typer.echo(f"{folder}: this rank's batches done; rank 0 writes the manifest")
    else:
        typer.echo(f"{folder}: shard {shard} done; run the other shards, then `datasetgan merge`")


def parse_layers(text: str) -> list[int | str]:
    """'0,1,5', '0-3' or layer names 'b8.conv0,b16.conv1' -> pyramid level indices and names."""
    layers: list[int | str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            layers.extend(range(int(low), int(high or low) + 1))
        else:
            layers.append(part)
    if not layers:
        raise DatasetGANError(f"no layers in {text!r}: use indices like 0,1,5 or 0-3, or layer names")
    return layers


@app.command("discover")
def discover_parts(
    directory: Path = typer.Argument(..., help="Workspace folder."),
    k: int = typer.Option(..., "-k", help="Number of parts (k-means clusters)."),
    samples: int = typer.Option(200, help="Generated images whose pixels are clustered."),
    layers: str = typer.Option(None, help="Pyramid levels to cluster on: indices (0,1,5 or 0-3) or names "
                                          "(`generator info`); default all."),
    resolution: int = typer.Option(None, help="Grid the pixels are read on (default: the workspace's feature "
                                              "resolution)."),
    pixels_per_image: int = typer.Option(1024, help="Random pixels taken from each image."),
    seed: int = typer.Option(0, help="Seeds the pixels taken and k-means."),
    device: str = DeviceOption,
) -> None:
    """Unsupervised parts: k-means on the generator's features (DIR/parts/), a picture of the candidates' clusters,
    and a cluster -> class mapping to edit (derived from the annotations when there are some)."""
    from datasetgan.discovery import (
        IGNORE_NAME,
        cluster_picture,
        discover,
        mapping_from_annotations,
        mapping_path,
        write_mapping,
    )
    from datasetgan.formats.masks import save_image
    from datasetgan.pipeline import Pipeline

    pipeline = Pipeline.open(directory, device)
    workspace = pipeline.workspace
    chosen = None if layers is None else parse_layers(layers)
    model = discover(pipeline, k, samples, chosen, resolution, pixels_per_image, seed)
    model.save(workspace.parts_dir)
    picture = workspace.parts_dir / "clusters.png"
    save_image(picture, cluster_picture(pipeline, model))
    annotated = workspace.annotated_ids()
    mapping = (mapping_from_annotations(pipeline, model, annotated) if annotated
               else {cluster: IGNORE_NAME for cluster in range(model.k)})
    write_mapping(workspace, model, mapping)
    settings = model.settings
    typer.echo(f"{model.k} parts from {settings['samples']} samples x {settings['pixels_per_image']} pixels "
               f"(layers {', '.join(settings['layer_names'])}; D={model.dim}; {model.resolution}x{model.resolution}): "
               f"{workspace.parts_dir}")
    typer.echo(f"clusters of the candidates: {picture}")
    if annotated:
        typer.echo(f"mapping by the majority rule over {len(annotated)} annotated candidates: {mapping_path(workspace)}")
        typer.echo("  " + ", ".join(f"{cluster}: {name}" for cluster, name in mapping.items()))
    else:
        typer.echo(f"no annotations: every cluster maps to {IGNORE_NAME} in {mapping_path(workspace)}; name a class "
                   "for each part there, then `datasetgan generate DIR --from-clusters`")


@app.command("import")
def import_annotations(
    directory: Path = typer.Argument(..., help="Workspace folder."),
    source: Path = typer.Argument(..., help="The export: a CVAT folder, LabelMe folder, COCO JSON, or mask folder."),
    fmt: str = typer.Option(..., "--format", help="cvat, labelme, coco or masks."),
    unlabelled: str = typer.Option("background", help="What unpainted pixels become: background or ignore."),
) -> None:
    """Bring annotations made in CVAT, LabelMe or COCO into the workspace (validated first)."""
    from datasetgan.formats.importers import import_annotations as import_step
    from datasetgan.workspace import Workspace

    typer.echo(import_step(Workspace.open(directory), source, fmt, unlabelled).summary())


@app.command("import-release")
def import_release(
    directory: Path = typer.Argument(..., help="New workspace folder."),
    annotations: Path = typer.Option(..., help="The release's annotation folder: image_{i}.jpg and image_mask{i}.npy."),
    latents: Path = typer.Option(..., help="The release's latent_stylegan1.npy (z, or w+ with --from-w)."),
    generator: Path = typer.Option(..., help="The release's *.for_g_all.pt (with --avg-latent) or a converted "
                                             ".safetensors."),
    avg_latent: Path = typer.Option(None, help="The release's avg_latent_stylegan1.npy, for a .for_g_all.pt: the "
                                               "generator is converted into the workspace with it."),
    classes: str = typer.Option(None, help="The experiment's class names in id order (default class0, class1, ...)."),
    from_w: bool = typer.Option(False, "--from-w", help="The latents are w+ (the experiment's annotation_data_from_w)."),
    truncation_cutoff: int = typer.Option(8, help="w slots truncated at psi 0.7: 8 for faces and cars, 7 for cats "
                                                  "and bedrooms."),
    device: str = DeviceOption,
) -> None:
    """Make a workspace of the official DatasetGAN release's annotated latents (face_34, car_20, cat_16, ...)."""
    from datasetgan.labels import parse_class_names
    from datasetgan.release import import_release as import_step

    from datasetgan.workspace import CONFIG_NAME

    if (directory / CONFIG_NAME).exists():
        raise DatasetGANError(f"{directory} is already a workspace: import the release into a new folder")
    ref = str(generator)
    if avg_latent is not None:
        from datasetgan.generators.loaders import convert

        directory.mkdir(parents=True, exist_ok=True)
        ref = str(directory.resolve() / "generator.safetensors")
        convert(generator, ref, avg_latent)
    names = None if classes is None else parse_class_names(classes)
    _, report = import_step(directory, ref, annotations, latents, names, from_w, truncation_cutoff, device)
    typer.echo(report.summary())


@app.command("export")
def export(
    dataset: Path = typer.Argument(..., help="A generated dataset folder (DIR/datasets/NAME)."),
    out: Path = typer.Option(..., help="Folder for the parquet files."),
    rows_per_file: int = typer.Option(1000),
) -> None:
    """Export a dataset's kept samples as Hugging Face-loadable parquet (needs datasetgan[parquet])."""
    from datasetgan.formats.parquet import export_parquet

    written = export_parquet(dataset, out, rows_per_file)
    typer.echo(f"wrote {len(written)} parquet file(s) to {out}")


@app.command("merge")
def merge(
    target: Path = typer.Argument(..., help="Dataset folder of one shard; receives the others."),
    shards: list[Path] = typer.Argument(..., help="Dataset folders of the other shards."),
) -> None:
    """Join the shards of a dataset generated on several machines into one manifest."""
    from datasetgan.factory import merge as merge_step

    typer.echo(f"merged into {merge_step(target, shards)}")


@app.command("select")
def select(
    directory: Path = typer.Argument(..., help="Workspace folder."),
    n: int = typer.Option(4, "-n", help="How many candidates to add."),
    pool: int = typer.Option(200, help="Fresh samples to rank."),
    seed: int = typer.Option(None, help="First seed of the pool (default 1000000: away from sampled candidates)."),
    condition: int = ConditionOption,
    device: str = DeviceOption,
) -> None:
    """Active learning: add the fresh samples the interpreter is least sure of."""
    from datasetgan.pipeline import SELECTION_SEED, Pipeline

    chosen = Pipeline.open(directory, device).select(n, pool, SELECTION_SEED if seed is None else seed, condition)
    typer.echo(f"added the {len(chosen)} most uncertain of {pool} samples: {', '.join(chosen)}")


@generator_app.command("convert")
def generator_convert(
    source: Path = typer.Argument(..., help="NVIDIA .pkl (StyleGAN2/3), rosinality .pt, the DatasetGAN release's "
                                            "*.for_g_all.pt, or our .safetensors."),
    out: Path = typer.Argument(..., help="Output .safetensors file."),
    avg_latent: Path = typer.Option(None, help="For the release's *.for_g_all.pt: its avg_latent_stylegan1.npy."),
) -> None:
    """Convert a generator to our safetensors format (loaded safely: no pickled code runs)."""
    from datasetgan.generators.loaders import convert

    convert(source, out, avg_latent)
    typer.echo(f"wrote {out}")


@generator_app.command("info")
def generator_info(ref: str = typer.Argument(..., help="builtin:NAME or a generator file.")) -> None:
    """Print a generator's config, its feature layers and the per-pixel feature dimension."""
    from datasetgan.generators.registry import describe, load_network_ref

    typer.echo(json.dumps(describe(load_network_ref(ref)), indent=2))


@segment_app.command("train")
def segment_train(
    data: Path = typer.Argument(..., help="A generated dataset (its kept samples) or a folder of images/, masks/ "
                                          "and classes.json."),
    out: Path = typer.Option(..., help="New run folder: config.json, log.jsonl, epoch-NNN.safetensors, "
                                       "best.safetensors."),
    arch: str = typer.Option("unet-resnet18-slim", help="unet-resnet18-slim (light, CPU), unet-resnet18, "
                             "deeplabv3-resnet101 (the paper's), deeplabv3-mobilenet or lraspp-mobilenet."),
    epochs: int = typer.Option(10),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3, help="Adam's learning rate (cosine decay to 0)."),
    seed: int = typer.Option(0, help="Seeds initialisation, order, augmentation and the validation split."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Start from torchvision's ImageNet backbone, "
                                                                "if cached in TORCH_HOME (never downloaded)."),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip", help="Random horizontal flips (off for classes such as "
                                                                "left eye / right eye)."),
    val: Path = typer.Option(None, help="A separate labelled folder to validate on (same classes)."),
    val_fraction: float = typer.Option(None, help="Seeded fraction of DATA held out for validation (default 0.1 "
                                                  "without --val; 0: none, best = last epoch)."),
    transfer_augment: bool = typer.Option(False, "--transfer-augment", help="Synthetic-to-real augmentation: colour "
                                          "jitter, blur, noise, small rotations and scalings, per image."),
    unlabelled: Path = typer.Option(None, help="A folder of unlabelled real images of the training size (or its "
                                               "images/): self-training on them after the plain training."),
    self_training: str = typer.Option("mean-teacher", help="With --unlabelled: mean-teacher (fine-tunes the trained "
                                      "segmenter with a mean teacher and ClassMix, as many epochs again) or "
                                      "pseudo-labels (a fresh student on offline pseudo-labels; options below)."),
    pseudo_threshold: float = typer.Option(0.9, help="With --unlabelled: the confidence that always keeps a "
                                                     "pseudo-label."),
    pseudo_class_share: float = typer.Option(0.5, help="With --unlabelled: each class keeps at least its most "
                                                       "confident share of pixels (class-balanced)."),
    self_training_rounds: int = typer.Option(1, help="With --unlabelled: teacher -> student rounds."),
    device: str = DeviceOption,
) -> None:
    """Train a segmenter: validation mIoU and a checkpoint after every epoch."""
    from pydantic import ValidationError

    from datasetgan.errors import summarize
    from datasetgan.segment.runs import train_run
    from datasetgan.segment.self_training import SelfTrainingConfig
    from datasetgan.segment.train import SegmenterConfig

    try:
        cfg = SegmenterConfig(architecture=arch, epochs=epochs, batch_size=batch_size, lr=lr, hflip=hflip,
                              pretrained=pretrained, seed=seed, transfer_augment=transfer_augment)
        pseudo_labelling = SelfTrainingConfig(threshold=pseudo_threshold, class_share=pseudo_class_share,
                                              rounds=self_training_rounds)
    except ValidationError as exc:
        raise DatasetGANError(summarize(exc)) from exc
    summary = train_run(data, out, cfg, resolve_device(device), val, val_fraction, unlabelled=unlabelled,
                        self_training=pseudo_labelling, method=self_training)
    typer.echo(json.dumps(summary, indent=2))


@segment_app.command("eval")
def segment_eval(
    source: Path = typer.Argument(..., help="A segmenter checkpoint, or a run folder: its best.safetensors, or "
                                            "with --folds all its epoch checkpoints."),
    test_data: Path = typer.Argument(..., help="Real labelled images: images/, masks/, classes.json."),
    out: Path = typer.Option(..., help="Report folder: report.json and confusion.png."),
    folds: int = typer.Option(None, help="The paper's protocol: k seeded folds of the test images; each fold picks "
                                         "the checkpoint best on it, which is scored on the other folds."),
    seed: int = typer.Option(0, help="Seed of the fold split."),
    batch_size: int = typer.Option(64),
    device: str = DeviceOption,
) -> None:
    """Score a segmenter on real labelled images: mIoU, per-class IoU, pixel accuracy, confusion matrix."""
    from datasetgan.fileio import writable_folder
    from datasetgan.segment.evaluate import (
        format_report,
        prepare_evaluation,
        run_evaluation,
        write_report,
    )

    evaluation = prepare_evaluation(source, test_data, folds, seed)
    writable_folder(out, "report folder")  # before the models run, so that a long evaluation cannot fail at its end
    report, confusion = run_evaluation(evaluation, resolve_device(device), batch_size)
    typer.echo(format_report(report))
    typer.echo(f"wrote {write_report(out, report, confusion)} and confusion.png")


@app.command("bench")
def bench(
    out: Path = typer.Option(None, help="Output folder (default out/paper, or out/paper-quick). Finished cells are "
                                        "kept there: a rerun resumes, and runs of other seeds may share it."),
    quick: bool = typer.Option(False, "--quick", help="Smoke preset: 1 seed, small sets, short training."),
    tables: str = typer.Option(None, help="Comma-separated tables to compute (default: all): the paper's 1, 3, 4, "
                                          "6, gap (where the points between DatasetGAN and full supervision go), "
                                          "sampling (truncation and noise of the synthetic samples) and parts "
                                          "(discovered parts against DatasetGAN)."),
    seeds: str = typer.Option(None, help="Comma-separated experiment seeds (default 0,1,2)."),
    steps: int = typer.Option(None, help="Segmenter optimisation steps, the same for every training set (default: "
                                         "the demo's recipe)."),
    batch_size: int = typer.Option(None, help="Segmenter batch (default: the recipe's; smaller sets: all their "
                                              "images)."),
    sizes: str = typer.Option(None, help="Table 3: synthetic samples generated (1000,2000,3000)."),
    main_size: int = typer.Option(None, help="Synthetic samples for Tables 1 and 4 (2000)."),
    drops: str = typer.Option(None, help="Table 4: fractions dropped (0,0.05,0.1,0.2)."),
    annotated: str = typer.Option(None, help="Table 6: annotation counts (4,8,16)."),
    t6_size: int = typer.Option(None, help="Table 6: synthetic samples per cell (1000)."),
    n_test: int = typer.Option(None, help="Real test images scored (500)."),
    generator: str = typer.Option(None, help="Generator reference (builtin:faces64)."),
    annotations: Path = typer.Option(None, help="Folder of ID.png masks of the generator's seeds (the shipped 16)."),
    threads: int = typer.Option(None, help="Torch threads (default: torch's choice)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars, or log lines only."),
    device: str = DeviceOption,
) -> None:
    """The paper's Tables 1, 3, 4 and 6 and ours on the faces world, mean ± std over seeds: results.md + .json."""
    import shlex
    import sys

    import torch

    from datasetgan.experiments import TABLES, bench_config, run_benchmark

    def numbers(text: str | None, kind=int) -> list | None:
        try:
            return None if text is None else [kind(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise DatasetGANError(f"expected comma-separated numbers, got {text!r}") from exc

    if threads is not None:
        torch.set_num_threads(threads)
    given = {"seeds": numbers(seeds), "steps": steps, "batch_size": batch_size, "sizes": numbers(sizes),
             "main_size": main_size, "drops": numbers(drops, float), "t6_counts": numbers(annotated),
             "t6_size": t6_size, "n_test": n_test, "generator": generator,
             "annotations": None if annotations is None else str(annotations)}
    cfg = bench_config(quick, **{k: v for k, v in given.items() if v is not None})
    folder = out or Path("out/paper-quick" if quick else "out/paper")
    command = shlex.join(["datasetgan", *sys.argv[1:]])
    chosen = TABLES if tables is None else [t.strip() for t in tables.split(",") if t.strip()]
    run_benchmark(cfg, folder, chosen, resolve_device(device), command, progress=progress)


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-output"), help="Folder for the workspace, dataset and report."),
    n: int = typer.Option(2000, "-n", help="Labelled samples to generate."),
    steps: int = typer.Option(None, min=1, help="Optimisation steps of each downstream segmenter (default: the shared "
                                         "recipe's)."),
    device: str = DeviceOption,
) -> None:
    """DatasetGAN end to end on the built-in faces generator: table + HTML report."""
    from datasetgan.demo import DemoConfig, run_demo
    from datasetgan.segment.recipe import RECIPE

    segmenter = RECIPE if steps is None else RECIPE.model_copy(update={"steps": steps})
    run_demo(out, resolve_device(device), DemoConfig(n_generate=n, segmenter=segmenter))


def main() -> None:
    """Entry point: user mistakes print one line and exit 1; bugs keep their traceback."""
    keep_freed_memory()
    try:
        app()
    except DatasetGANError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
