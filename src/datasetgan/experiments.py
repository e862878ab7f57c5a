"""The paper's experiments (Tables 1, 3, 4 and 6 of DatasetGAN) and the gap table on the faces world.

A seed s sets the interpreter's seed, the generation seeds and the segmenter's seed together.
Per seed:
  main       the annotations (default: the 16 the demo ships) -> style interpreter -> synthetic
             samples, generated once in blocks of consecutive seeds. Tables 1, 3 and 4 train
             on prefixes of them less their most uncertain fraction (`select_subset`), so one
             cell (size, drop) serves every table that names it: Table 1's DatasetGAN row is
             Table 4's 10 % row and Table 3's row of the same size. Self-training rows start
             from a cell's final model (kept in models/) as the teacher.
  random-k   an interpreter on the first k annotations of a seeded order of them (Table 6).
  active-k   Table 6's active learning: the first `t6_start` of that order, then
             `Pipeline.select` adds the fresh candidates the current interpreter is least sure
             of and the painter (the world oracle, as for the shipped annotations) labels them.
  sampling-* the sampling table: every annotated seed rendered under other sampling settings
             (truncation, its cutoff, noise per sample) and repainted by the painter, since
             its image changed; the settings the shipped annotations use are `main` itself.
  parts-k    Segmentation in Style's route (the parts table): parts discovered by k-means on the
             generator's features without labels, their classes read from the first k
             annotations of the seeded order; its samples are labelled by the parts.
Every segmenter trains with the demo's recipe (`segment.recipe.RECIPE`: the same steps and batch
for every set, smaller only for sets smaller than a batch) and is scored on the world's real test
split, its checkpoint picked by the paper's 5-fold protocol.

Output folder (a rerun resumes: finished cells and stages are read back, not recomputed):
  protocol.json              the settings behind the numbers; a resume must use the same
  cells/KEY.json             one trained-and-scored segmenter each (with its learning curve)
  models/KEY.safetensors     the final model of the cells that teach a self-training cell
  stages/KEY.json            finished interpreters and generated blocks
  work/seedS/NAME/           the workspaces, their interpreters and generated blocks
  results.json, results.md   the tables (mean ± std over seeds) and every per-seed number
"""

import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field, ValidationError, model_validator
from safetensors import safe_open

from datasetgan import factory
from datasetgan.demo import shipped_annotations
from datasetgan.device import resolve_device
from datasetgan.discovery import (PartDiscovery, PartLabeller, assign_classes, discover, mapping_from_annotations,
                                  overlap, write_mapping)
from datasetgan.errors import DatasetGANError, summarize
from datasetgan.fileio import atomic_write, write_json
from datasetgan.formats.dataset import read_manifest
from datasetgan.formats.masks import load_mask
from datasetgan.generators.registry import builtin_path, load_generator
from datasetgan.interpreter import InterpreterConfig
from datasetgan.pipeline import SELECTION_SEED, Pipeline, synth_batch
from datasetgan.progress import progress_bar
from datasetgan.metrics import ConfusionMeter, SegmentationScores
from datasetgan.segment.data import read_image
from datasetgan.segment.mean_teacher import MeanTeacherConfig
from datasetgan.segment.recipe import FOLDS, RECIPE, SELF_TRAINING, Scored, self_train_and_score, train_and_score
from datasetgan.segment.train import SegmenterConfig, evaluate, load_segmenter, predict, save_segmenter
from datasetgan.workspace import SamplingSettings, Workspace
from datasetgan.worlds import get_world
from datasetgan.worlds.oracle import (
    annotate_candidates,
    builtin_oracle_path,
    load_oracle,
    render_split,
)

TABLES = ("1", "3", "4", "6", "gap", "sampling", "parts")
PARTS_EVAL_SEED = 3_000_000  # the parts table's images scored against the oracle: away from every other range
SEED_STRIDE = 10_000_000  # between the seed ranges of two experiment seeds

Painter = Callable[[Workspace, list[str]], None]  # labels candidates as a person would


class BenchConfig(BaseModel):
    """What defines the numbers (the output folder records it; a resume must match)."""

    generator: str = "builtin:faces64"
    annotations: str | None = None  # folder of ID.png masks of the generator's seeds; None: the shipped 16
    world: str = "faces"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    segmenter: SegmenterConfig = RECIPE  # the demo's: steps, batch, learning rate, checkpoints
    self_training: MeanTeacherConfig = SELF_TRAINING  # the demo's too
    n_test: int = Field(500, ge=FOLDS)  # real_test images (the 5-fold protocol needs a few)
    n_unlabelled: int = Field(2000, ge=1)  # real_train images without their labels, for self-training
    n_full: int = Field(4000, ge=1)  # the gap table's fully labelled real row
    n_full_steps: int = Field(2800, ge=1)  # that row again, trained this long: 4,000 real images converge later
    sizes: list[int] = Field(default_factory=lambda: [1000, 2000, 3000], min_length=1)  # Table 3
    main_size: int = Field(2000, ge=1)  # Tables 1 and 4
    drops: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2], min_length=1)  # Table 4
    main_drop: float = Field(0.1, ge=0, lt=1)  # Tables 1, 3 and 6
    t6_counts: list[int] = Field(default_factory=lambda: [4, 8, 16], min_length=1)
    t6_start: int = Field(2, ge=1)  # active learning starts from this many annotations
    t6_size: int = Field(1000, ge=1)  # synthetic samples per Table 6 cell
    select_pool: int = Field(200, ge=1)  # fresh candidates ranked per active-learning round
    interpreter: dict = Field(default_factory=dict)  # InterpreterConfig overrides (the seed is set per run)
    # the sampling table's rows: the shipped annotations' settings, noise drawn per sample, only the
    # coarse styles (4 and 8 px) truncated, both (as the release samples: noise per sample, 8 of 18
    # slots truncated), and no truncation
    samplings: list[SamplingSettings] = Field(default_factory=lambda: [
        SamplingSettings(), SamplingSettings(noise="per_sample"), SamplingSettings(truncation_cutoff=4),
        SamplingSettings(truncation_cutoff=4, noise="per_sample"), SamplingSettings(psi=1.0)], min_length=1)
    oracle_resolution: int = 64  # the fully supervised row: the committed oracle at its resolution
    parts_counts: list[int] = Field(default_factory=lambda: [1, 4, 16], min_length=1)  # DatasetGAN rows of the parts table
    parts_k: int = Field(32, ge=2)  # clusters discovered
    parts_samples: int = Field(200, ge=1)  # generated images whose pixels are clustered
    parts_eval: int = Field(256, ge=1)  # generated images the parts are scored on against the oracle

    @model_validator(mode="after")
    def _check(self) -> "BenchConfig":
        if min(self.sizes) < 1 or min(self.seeds) < 0 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("sizes must be positive and seeds distinct non-negative integers")
        if not all(0 <= d < 1 for d in self.drops):
            raise ValueError(f"drop fractions must be in [0, 1), got {self.drops}")
        if self.t6_start >= min(self.t6_counts):
            raise ValueError(f"t6_start ({self.t6_start}) must be below every Table 6 count {self.t6_counts}")
        steps = [b - a for a, b in zip([self.t6_start, *sorted(self.t6_counts)], sorted(self.t6_counts))]
        if self.select_pool < max(steps):
            raise ValueError(f"select_pool ({self.select_pool}) must hold at least the {max(steps)} candidates "
                             "one active-learning round adds")
        return self

    @property
    def block(self) -> int:
        """Samples per generated block: every size is a whole number of blocks."""
        return math.gcd(*self.sizes, self.main_size, self.t6_size)


QUICK = {"seeds": [0], "steps": 40, "n_full_steps": 80, "n_test": 200, "sizes": [200, 400], "main_size": 400,
         "t6_counts": [4, 8], "t6_size": 200, "select_pool": 50, "parts_counts": [1, 4], "parts_k": 8,
         "parts_samples": 16, "parts_eval": 32,
         "interpreter": {"members": 3, "min_epochs": 1, "max_epochs": 2},
         "samplings": [{}, {"truncation_cutoff": 4, "noise": "per_sample"}]}


def bench_config(quick: bool = False, **settings) -> BenchConfig:
    """The settings, over the defaults or over the --quick smoke preset (one seed, small sets, minutes).

    `steps` and `batch_size` change the segmenter recipe's.
    """
    settings = (QUICK if quick else {}) | settings
    recipe = {key: settings.pop(key) for key in ("steps", "batch_size") if key in settings}
    if recipe:
        settings["segmenter"] = dict(settings.get("segmenter") or RECIPE.model_dump()) | recipe
    try:
        return BenchConfig(**settings)
    except ValidationError as exc:
        raise DatasetGANError(f"invalid benchmark settings: {summarize(exc)}") from exc


def select_subset(records: list[dict], n: int, drop: float) -> list[dict]:
    """The first n records (generation order) less the round(drop * n) most uncertain of them.

    The dropped ones are those `factory.most_uncertain` names, as in a generated dataset; order is kept.
    """
    if not 1 <= n <= len(records):
        raise DatasetGANError(f"asked for the first {n} samples of {len(records)}")
    if not 0 <= drop < 1:
        raise DatasetGANError(f"the dropped fraction must be in [0, 1), got {drop}")
    prefix = records[:n]
    dropped = set(factory.most_uncertain(prefix, drop))
    return [r for i, r in enumerate(prefix) if i not in dropped]


def fingerprint(paths: list[Path]) -> str:
    """A digest of input files, so that a cache made with other weights or masks is not reused."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def generator_file(ref: str) -> Path:
    return builtin_path(ref.removeprefix("builtin:")) if ref.startswith("builtin:") else Path(ref)


def oracle_training_images(world: str, resolution: int) -> int:
    """How many real images the committed oracle was trained on (from its file's metadata)."""
    with safe_open(str(builtin_oracle_path(world, resolution)), "pt") as handle:
        return json.loads((handle.metadata() or {}).get("extra", "{}")).get("n_train", 0)


def as_tensors(images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.stack(masks))


def load_samples(records: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks of generated records (each names its dataset folder)."""
    folders = [Path(r["dataset"]) for r in records]
    return as_tensors([read_image(f / "images" / f"{r['name']}.png") for f, r in zip(folders, records)],
                      [load_mask(f / "masks" / f"{r['name']}.png") for f, r in zip(folders, records)])


def cell_json(scored: Scored) -> dict:
    """A trained-and-scored segmenter (`segment.recipe`) as a cell's JSON."""
    return scores_json(scored.scores) | {"train_images": scored.train_images, "steps": scored.curve[-1][0],
                                         "curve": [[step, miou] for step, miou in scored.curve]}


def scores_json(scores: SegmentationScores) -> dict:
    """JSON has no NaN: a class absent from truth and prediction has IoU null."""
    return {"miou": scores.miou, "pixel_accuracy": scores.pixel_accuracy,
            "iou": [None if math.isnan(v) else v for v in scores.iou]}


def sampling_label(s: SamplingSettings) -> str:
    slots = "all w slots" if s.truncation_cutoff is None else f"the first {s.truncation_cutoff} w slots"
    truncation = "no truncation" if s.psi == 1 else f"psi {s.psi:g} on {slots}"
    return f"{truncation}, {'noise per sample' if s.noise == 'per_sample' else 'constant noise'}"


def oracle_painter(world: str, resolution: int, device: torch.device) -> Painter:
    """The world oracle paints candidates, as it painted the shipped annotations."""
    def paint(workspace: Workspace, ids: list[str]) -> None:
        annotate_candidates(workspace, load_oracle(world, resolution, device), ids, device)
    return paint


@dataclass
class Row:
    label: str
    column: str
    keys: list[str]  # one cell per seed (the oracle: one cell)


@dataclass
class Table:
    name: str  # the paper's number, or "gap"
    title: str
    rows: list[Row]
    note: str = ""
    curves: list[str] = field(default_factory=list)  # labels of rows whose learning curves are shown
    compare: tuple[int, int] | None = None  # rows whose per-seed difference is reported


class Experiment:
    """Plans the cells of the requested tables, computes the missing ones, writes the tables."""

    def __init__(self, cfg: BenchConfig, out: Path, device: torch.device, painter: Painter | None = None,
                 progress: bool = True):
        self.cfg, self.out, self.device, self.progress = cfg, Path(out), device, progress
        self.annotations = Path(cfg.annotations) if cfg.annotations else shipped_annotations()
        self.ids = sorted(p.stem for p in self.annotations.glob("*.png"))
        if not self.ids:
            raise DatasetGANError(f"no annotations (ID.png) in {self.annotations}")
        named = [i for i in self.ids if not i.isdigit()]
        if named:
            raise DatasetGANError(f"annotation names must be the generator seeds of their samples (e.g. 000012.png); "
                                  f"{self.annotations} holds {named[0]}.png")
        if max(cfg.t6_counts + cfg.parts_counts) > len(self.ids):
            raise DatasetGANError(f"Table 6 or parts-table counts {cfg.t6_counts}, {cfg.parts_counts} exceed the "
                                  f"{len(self.ids)} annotations")
        self.classes = list(get_world(cfg.world).classes)
        self.generator = load_generator(cfg.generator, device)  # one for every workspace of the run
        self.resolution = self.generator.resolution
        self.painter = painter or oracle_painter(cfg.world, self.resolution, device)
        self.pipelines: dict[Path, Pipeline] = {}
        self.jobs: dict[str, Callable[[], dict]] = {}
        self.computed: list[str] = []

    # ---- caching ---------------------------------------------------------------------

    def cached(self, kind: str, key: str, compute: Callable[[], dict]) -> dict:
        path = self.out / kind / f"{key}.json"
        if path.is_file():
            return json.loads(path.read_text())
        started = time.monotonic()
        result = compute() | {"seconds": round(time.monotonic() - started, 1)}
        write_json(path, result)
        if kind == "cells":
            self.computed.append(key)
        else:
            print(f"[bench] {key}: done in {result['seconds']:.0f} s", flush=True)
        return result

    def check_protocol(self) -> None:
        oracle = builtin_oracle_path(self.cfg.world, self.cfg.oracle_resolution)
        files = [generator_file(self.cfg.generator), *([oracle] if oracle.is_file() else []),
                 *(self.annotations / f"{cid}.png" for cid in self.ids)]
        path = self.out / "protocol.json"
        # seeds are left out: cells are per seed, so runs of other seeds may share the folder (in parallel too);
        # the interpreter's settings are recorded resolved, so that a changed default does not read old cells back
        interpreter = InterpreterConfig(**{"num_classes": len(self.classes)} | self.cfg.interpreter)
        protocol = self.cfg.model_dump(mode="json", exclude={"seeds"}) | {
            "interpreter": interpreter.model_dump(mode="json", exclude={"seed"}), "inputs": fingerprint(files)}
        if path.is_file() and json.loads(path.read_text()) != protocol:
            old = json.loads(path.read_text())
            diff = {k: (old.get(k), v) for k, v in protocol.items() if old.get(k) != v}
            raise DatasetGANError(f"{self.out} holds results of other settings {diff} (old, new): "
                                  "choose another --out, or delete it")
        write_json(path, protocol)

    # ---- workspaces ------------------------------------------------------------------

    def work(self, seed: int) -> Path:
        return self.out / "work" / f"seed{seed}"

    def pool(self, seed: int) -> list[str]:
        """The annotations in a seeded random order: Table 6's random picks are its first k."""
        return [self.ids[i] for i in np.random.RandomState(seed).permutation(len(self.ids))]

    def trained(self, seed: int, name: str, build: Callable[[Path], None]) -> Pipeline:
        """build(root) makes the workspace with its annotations; the interpreter trains on them."""
        root = self.work(seed) / name

        def make() -> dict:
            shutil.rmtree(root, ignore_errors=True)  # an unfinished attempt
            shutil.rmtree(self.out / "stages" / f"seed{seed}" / name, ignore_errors=True)
            build(root)
            pipeline = self.pipeline(root)
            pipeline.train(progress=self.progress)
            return {"annotated": pipeline.workspace.annotated_ids()}

        self.cached("stages", f"seed{seed}/{name}/interpreter", make)
        return self.pipeline(root)

    def pipeline(self, root: Path) -> Pipeline:
        """The workspace at root with the run's generator, opened once (and its interpreter read once)."""
        if root not in self.pipelines:
            self.pipelines[root] = Pipeline(Workspace.open(root), self.device, self.generator)
        return self.pipelines[root]

    def annotated(self, seed: int, name: str, ids: list[str], sampling: SamplingSettings | None = None) -> Pipeline:
        """A workspace holding the given annotations (and their candidates); under other `sampling`
        settings their images change, so the painter labels them again."""
        def build(root: Path) -> None:
            masks = [self.annotations / f"{cid}.png" for cid in ids]
            settings = {} if sampling is None else {"sampling": sampling.model_dump()}
            pipeline = Pipeline.from_annotations(root, self.cfg.generator, self.classes, masks, self.device,
                                                 self.generator, interpreter=self.cfg.interpreter | {"seed": seed},
                                                 **settings)
            if sampling is not None:
                self.painter(pipeline.workspace, pipeline.workspace.annotated_ids())
        return self.trained(seed, name, build)

    def workspace(self, seed: int, name: str) -> Pipeline:
        """main (every annotation), random-K (the pool's first K) or active-K."""
        kind, _, k = name.partition("-")
        if kind == "main":
            return self.annotated(seed, name, self.ids)
        if kind == "random":
            return self.annotated(seed, name, self.pool(seed)[: int(k)])
        if kind == "sampling":
            return self.annotated(seed, name, self.ids, self.samplings[name])
        if kind == "parts":
            return self.parts(seed, int(k))
        return self.active(seed, int(k))

    def random_name(self, k: int) -> str:
        return "main" if k == len(self.ids) else f"random-{k}"  # every annotation: the main workspace

    def active(self, seed: int, k: int) -> Pipeline:
        """The previous round's workspace plus the candidates its interpreter is least sure of."""
        def build(root: Path) -> None:
            smaller, start = [c for c in sorted(self.cfg.t6_counts) if c < k], self.cfg.t6_start
            previous = (self.active(seed, smaller[-1]) if smaller
                        else self.annotated(seed, f"active-{start}", self.pool(seed)[:start]))
            shutil.copytree(previous.workspace.root, root, ignore=shutil.ignore_patterns("datasets"))
            pipeline = Pipeline(Workspace.open(root), self.device, self.generator)
            chosen = pipeline.select(k - len(pipeline.workspace.annotated_ids()), self.cfg.select_pool,
                                     seed=SELECTION_SEED + seed * SEED_STRIDE)
            self.painter(pipeline.workspace, chosen)
        return self.trained(seed, f"active-{k}", build)

    def parts(self, seed: int, k: int) -> Pipeline:
        """The pool's first k annotations, parts discovered on the generator without them, and each
        part's class read from them (the majority rule); no interpreter."""
        name = f"parts-{k}"
        root = self.work(seed) / name

        def make() -> dict:
            shutil.rmtree(root, ignore_errors=True)  # an unfinished attempt
            shutil.rmtree(self.out / "stages" / f"seed{seed}" / name, ignore_errors=True)
            masks = [self.annotations / f"{cid}.png" for cid in self.pool(seed)[:k]]
            pipeline = Pipeline.from_annotations(root, self.cfg.generator, self.classes, masks, self.device,
                                                 self.generator)
            model = discover(pipeline, self.cfg.parts_k, self.cfg.parts_samples, seed=seed, progress=self.progress)
            model.save(pipeline.workspace.parts_dir)
            mapping = mapping_from_annotations(pipeline, model)
            write_mapping(pipeline.workspace, model, mapping)
            return {"mapping": {str(cluster): name for cluster, name in mapping.items()}}
        self.cached("stages", f"seed{seed}/{name}/discovery", make)
        return self.pipeline(root)

    @cached_property
    def samplings(self) -> dict[str, SamplingSettings]:
        """The sampling table's workspaces by name; the shipped annotations' settings are `main`."""
        def name(s: SamplingSettings) -> str:
            if s == SamplingSettings():  # a workspace's default: the main one's
                return "main"
            return f"sampling-psi{s.psi:g}-cutoff{s.truncation_cutoff or 'all'}-noise-{s.noise}"
        return {name(s): s for s in self.cfg.samplings}

    # ---- synthetic samples -----------------------------------------------------------

    def records(self, seed: int, name: str, pipeline: Pipeline, n: int) -> list[dict]:
        """The first n generated samples of a workspace, generating the blocks that are missing."""
        block, records = self.cfg.block, []
        for b in range(math.ceil(n / block)):
            def generate(b: int = b) -> dict:  # drop nothing here: select_subset drops per cell
                first = factory.FIRST_SEED + seed * SEED_STRIDE + b * block
                labeller = PartLabeller.open(pipeline.workspace) if name.startswith("parts-") else None
                pipeline.generate(f"block-{b:04d}", block, first_seed=first, drop_uncertain=0.0,
                                  progress=self.progress, labeller=labeller)
                return {"samples": block, "first_seed": first}
            self.cached("stages", f"seed{seed}/{name}/block-{b:04d}", generate)
            folder = pipeline.workspace.datasets_dir / f"block-{b:04d}"
            records += [r | {"dataset": str(folder)} for r in read_manifest(folder, kept_only=False)]
        return records[:n]

    # ---- cells -----------------------------------------------------------------------

    @cached_property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The real test images at the generator's resolution, rendered once and only when needed."""
        return render_split(self.cfg.world, "real_test", self.cfg.n_test, self.resolution)

    def model_path(self, key: str) -> Path:
        return self.out / "models" / f"{key}.safetensors"

    def recipe(self, seed: int, **changes) -> SegmenterConfig:
        return self.cfg.segmenter.model_copy(update={"seed": seed, **changes})

    def score(self, images: torch.Tensor, masks: torch.Tensor, seed: int, keep_as: str | None = None,
              **recipe_changes) -> dict:
        """Train and score with the shared recipe (with `recipe_changes`); `keep_as` keeps the final
        model (a teacher)."""
        recipe = self.recipe(seed, **recipe_changes)
        scored = train_and_score(images, masks, self.test, len(self.classes), self.device, recipe)
        if keep_as is not None:
            self.model_path(keep_as).parent.mkdir(parents=True, exist_ok=True)
            save_segmenter(scored.model, self.model_path(keep_as), self.cfg.segmenter.architecture,
                           [c.name for c in self.classes])
        return cell_json(scored)

    @cached_property
    def unlabelled(self) -> torch.Tensor:
        """Real images without their labels: those the generator was trained on."""
        return render_split(self.cfg.world, "real_train", self.cfg.n_unlabelled, self.resolution)[0]

    def self_trained(self, seed: int, teacher_key: str, training_set: Callable[[], tuple]) -> str:
        """One round of self-training from the teacher cell's final model (computed first if missing)."""
        def compute() -> dict:
            if not self.model_path(teacher_key).is_file():  # its cell was computed elsewhere: redo it
                (self.out / "cells" / f"{teacher_key}.json").unlink(missing_ok=True)
                self.cached("cells", teacher_key, self.jobs[teacher_key])
            teacher, _ = load_segmenter(self.model_path(teacher_key), self.device)
            scored = self_train_and_score(teacher, *training_set(), self.unlabelled, self.test, len(self.classes),
                                          self.device, self.recipe(seed), self.cfg.self_training)
            return cell_json(scored) | {"teacher": teacher_key,
                                                           "unlabelled_images": len(self.unlabelled)}
        return self.cell(f"{teacher_key}-self-trained", compute)

    def cell(self, key: str, compute: Callable[[], dict]) -> str:
        self.jobs.setdefault(key, compute)
        return key

    def synthetic_set(self, seed: int, name: str, n: int, drop: float) -> tuple[torch.Tensor, torch.Tensor]:
        return load_samples(select_subset(self.records(seed, name, self.workspace(seed, name), n), n, drop))

    def synthetic(self, seed: int, name: str, n: int, drop: float, teacher: bool = False,
                  transfer_augment: bool = False) -> str:
        key = f"seed{seed}/{name}-n{n}-drop{drop:g}" + ("-transfer-augment" if transfer_augment else "")

        def compute() -> dict:
            images, masks = self.synthetic_set(seed, name, n, drop)
            return self.score(images, masks, seed, key if teacher else None, transfer_augment=transfer_augment) | {
                "generated": n, "dropped": n - len(images)}
        return self.cell(key, compute)

    def exact_labels(self, seed: int, n: int, drop: float) -> str:
        """The gap table's (b): the same generated images, labelled by the world oracle instead."""
        def compute() -> dict:
            images, _ = self.synthetic_set(seed, "main", n, drop)
            masks = predict(load_oracle(self.cfg.world, self.resolution, self.device), images, self.device)
            return self.score(images, masks, seed) | {"generated": n, "dropped": n - len(images)}
        return self.cell(f"seed{seed}/main-n{n}-drop{drop:g}-oracle-labels", compute)

    def real(self, seed: int, k: int | None = None, teacher: bool = False, steps: int | None = None) -> str:
        """k real labelled images (default: as many as there are annotations), for the recipe's steps or
        `steps` (checkpoints as far apart as the recipe's)."""
        k, recipe = len(self.ids) if k is None else k, self.cfg.segmenter
        key = f"seed{seed}/real-{k}" + (f"-steps{steps}" if steps else "")
        changes = {}
        if steps:
            changes = {"steps": steps, "checkpoints": max(1, round(recipe.checkpoints * steps / recipe.steps))}
        return self.cell(key, lambda: self.score(*render_split(self.cfg.world, "real_train", k, self.resolution),
                                                 seed, key if teacher else None, **changes))

    def annotated_gan(self, seed: int) -> str:
        """Latent vs output: the same segmenter on the annotated GAN images themselves."""
        def compute() -> dict:
            workspace = self.workspace(seed, "main").workspace
            ids = workspace.annotated_ids()
            images, masks = as_tensors([read_image(workspace.candidate_image(c)) for c in ids],
                                       [load_mask(workspace.annotation_path(c)) for c in ids])
            return self.score(images, masks, seed)
        return self.cell(f"seed{seed}/annotated-gan", compute)

    def parts_vs_oracle(self, seed: int, k: int) -> str:
        """The discovered parts themselves against the world oracle on fresh generated images, each
        cluster mapped to the class most of its pixels have in the oracle's masks of those images:
        the best a cluster -> class mapping can do (an upper bound for any mapping read from
        annotations)."""
        def compute() -> dict:
            pipeline, names = self.parts(seed, k), [c.name for c in self.classes]
            model = PartDiscovery.load(pipeline.workspace.parts_dir)
            first = PARTS_EVAL_SEED + seed * SEED_STRIDE
            images, clusters = self.cluster_maps(pipeline, model, list(range(first, first + self.cfg.parts_eval)))
            masks = predict(load_oracle(self.cfg.world, self.resolution, self.device), images, self.device)
            mapping = assign_classes(overlap(clusters, masks, model.k, len(names)), names, "majority")
            lookup = torch.tensor([names.index(mapping[c]) if mapping[c] in names else 0 for c in range(model.k)])
            meter = ConfusionMeter(len(names))
            meter.update(lookup[clusters], masks)
            return scores_json(meter.scores()) | {"images": len(images), "clusters": model.k}
        return self.cell(f"seed{seed}/parts-{k}-vs-oracle-n{self.cfg.parts_eval}", compute)

    def cluster_maps(self, pipeline: Pipeline, model: PartDiscovery, seeds: list[int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and cluster maps (at the image size) of generated seeds."""
        images, clusters, step = [], [], synth_batch(self.generator)
        for start in range(0, len(seeds), step):
            chunk = seeds[start : start + step]
            rendered, pyramid = self.generator.synthesize(pipeline.ws(chunk),
                                                          pipeline.workspace.config.sampling.noise_ids(chunk))
            images.append(self.generator.to_uint8(rendered).cpu())
            maps = model.cluster_maps(pyramid)[:, None].float()
            clusters.append(torch.nn.functional.interpolate(maps, size=rendered.shape[-2:], mode="nearest")[:, 0].long())
        return torch.cat(images), torch.cat(clusters).cpu()

    def oracle(self) -> str:
        def compute() -> dict:
            resolution = self.cfg.oracle_resolution
            test = (self.test if resolution == self.resolution
                    else render_split(self.cfg.world, "real_test", self.cfg.n_test, resolution))
            oracle = load_oracle(self.cfg.world, resolution, self.device)
            return scores_json(evaluate(oracle, *test, len(self.classes), self.device)) | {"resolution": resolution}
        return self.cell("oracle", compute)

    # ---- tables ----------------------------------------------------------------------

    def table1(self) -> Table:
        cfg, k = self.cfg, len(self.ids)
        main = [self.synthetic(s, "main", cfg.main_size, cfg.main_drop, teacher=True) for s in cfg.seeds]
        real = [self.real(s, teacher=True) for s in cfg.seeds]
        rows = [Row(f"{k} real labelled images, from scratch (the paper's transfer-learning row)", "", real),
                Row(f"{k} real labelled + self-training on {cfg.n_unlabelled} unlabelled real (semi-supervised)",
                    "", [self.self_trained(s, key, lambda s=s: render_split(cfg.world, "real_train", k,
                                                                              self.resolution))
                         for s, key in zip(cfg.seeds, real)]),
                Row(f"the {k} annotated GAN images themselves (latent vs output)", "",
                    [self.annotated_gan(s) for s in cfg.seeds]),
                Row(f"DatasetGAN: {cfg.main_size} synthetic from {k} annotated, {100 * cfg.main_drop:g} % "
                    "most uncertain dropped", "", main),
                Row(f"DatasetGAN + self-training on {cfg.n_unlabelled} unlabelled real", "",
                    [self.self_trained(s, key, lambda s=s: self.synthetic_set(s, "main", cfg.main_size, cfg.main_drop))
                     for s, key in zip(cfg.seeds, main)]),
                Row("DatasetGAN + synthetic-to-real augmentation (colour, blur, noise, small geometry)", "",
                    [self.synthetic(s, "main", cfg.main_size, cfg.main_drop, transfer_augment=True)
                     for s in cfg.seeds]),
                Row(f"fully supervised: the world oracle ({oracle_training_images(cfg.world, cfg.oracle_resolution)} "
                    "real; one model)", "", [self.oracle()])]
        shared = ([f"Table 4's {100 * cfg.main_drop:g} % row"] if cfg.main_drop in cfg.drops else []) + (
            ["Table 3's row of that size"] if cfg.main_size in cfg.sizes else [])
        note = f"The DatasetGAN row is the same cells as {' and '.join(shared)}." if shared else ""
        return Table("1", "real labels vs DatasetGAN, tested on real images", rows, note, compare=(3, 0))

    def table3(self) -> Table:
        cfg = self.cfg
        rows = [Row(f"{n} generated ({n - round(cfg.main_drop * n)} kept)", "",
                    [self.synthetic(s, "main", n, cfg.main_drop) for s in cfg.seeds]) for n in sorted(cfg.sizes)]
        return Table("3", f"synthetic dataset size, {100 * cfg.main_drop:g} % most uncertain dropped", rows)

    def table4(self) -> Table:
        cfg = self.cfg
        rows = [Row(f"{100 * d:g} % dropped ({cfg.main_size - round(d * cfg.main_size)} kept)", "",
                    [self.synthetic(s, "main", cfg.main_size, d) for s in cfg.seeds]) for d in sorted(cfg.drops)]
        return Table("4", f"dropping the most uncertain of {cfg.main_size} synthetic samples", rows)

    def table6(self) -> Table:
        cfg, rows = self.cfg, []
        for k in sorted(cfg.t6_counts):
            for column, name in (("random", self.random_name(k)), ("active learning", f"active-{k}")):
                rows.append(Row(str(k), column, [self.synthetic(s, name, cfg.t6_size, cfg.main_drop)
                                                 for s in cfg.seeds]))
        note = (f"Random: the first k of a seeded order of the {len(self.ids)} annotations (all of them: "
                "the main interpreter). Active learning: the first "
                f"{cfg.t6_start} of that order, then each round adds the candidates (of {cfg.select_pool} fresh "
                "ones) its interpreter is least sure of, labelled by the world oracle as the shipped ones were.")
        return Table("6", f"which samples to annotate ({cfg.t6_size} synthetic each, "
                        f"{100 * cfg.main_drop:g} % most uncertain dropped)", rows, note)

    def gap(self) -> Table:
        """Where the points between DatasetGAN and full supervision go, at the shared recipe."""
        cfg, k, n, drop = self.cfg, len(self.ids), self.cfg.main_size, self.cfg.main_drop
        rows = [Row(f"(a) {cfg.n_full} real labelled images, the shared recipe", "",
                    [self.real(s, cfg.n_full) for s in cfg.seeds]),
                Row(f"    the same, {cfg.n_full_steps} steps (converged)", "",
                    [self.real(s, cfg.n_full, steps=cfg.n_full_steps) for s in cfg.seeds]),
                Row(f"    the world oracle ({oracle_training_images(cfg.world, cfg.oracle_resolution)} real, its own "
                    "longer recipe; one model)", "", [self.oracle()]),
                Row(f"(b) {n} generated images ({100 * drop:g} % dropped), the oracle's labels", "",
                    [self.exact_labels(s, n, drop) for s in cfg.seeds]),
                Row(f"(c) the same images, the style interpreter's labels (DatasetGAN)", "",
                    [self.synthetic(s, "main", n, drop, teacher=True) for s in cfg.seeds]),
                Row(f"(d) {k} real labelled images", "", [self.real(s, teacher=True) for s in cfg.seeds])]
        note = ("(a) - (b): what generated images cost against real ones (domain gap and the generator's missing "
                "modes); (b) - (c): what the interpreter's labels cost against exact ones; (c) - (d): DatasetGAN's "
                "gain over labelling real images. Converged: under 0.5 mIoU gained over the last 20 % of the steps "
                "(the learning curves).")
        return Table("gap", "where the points go", rows, note, curves=[rows[0].label, rows[1].label, rows[4].label])

    def sampling(self) -> Table:
        """How the synthetic set is sampled: each row its own repainted annotations and interpreter."""
        cfg = self.cfg
        rows = [Row(sampling_label(s) + (" (the shipped annotations' settings)" if name == "main" else ""), "",
                    [self.synthetic(seed, name, cfg.main_size, cfg.main_drop) for seed in cfg.seeds])
                for name, s in self.samplings.items()]
        note = (f"{cfg.main_size} synthetic samples each, {100 * cfg.main_drop:g} % most uncertain dropped. The "
                f"same {len(self.ids)} annotated seeds in every row; where the settings change their images, the "
                "world oracle repaints them (it painted the shipped ones). Truncating the first k w slots pulls only "
                "the coarsest styles towards the mean (StyleGAN2 at 64 px has 10 slots, about 2 per resolution).")
        return Table("sampling", "how the synthetic samples are drawn", rows, note)

    def parts_table(self) -> Table:
        """Segmentation in Style's route against DatasetGAN's, by annotated images."""
        cfg = self.cfg
        k = min(cfg.parts_counts)
        parts = f"parts-{k}"
        rows = [Row(f"DatasetGAN, {n} annotated", "",
                    [self.synthetic(s, self.random_name(n), cfg.t6_size, cfg.main_drop) for s in cfg.seeds])
                for n in sorted(cfg.parts_counts)]
        rows += [Row(f"discovered parts (k-means, {cfg.parts_k} clusters), classes from {k} annotated", "",
                     [self.synthetic(s, parts, cfg.t6_size, cfg.main_drop) for s in cfg.seeds]),
                 Row(f"the parts themselves on {cfg.parts_eval} generated images against the world oracle, best "
                     "cluster -> class assignment (no segmenter)", "", [self.parts_vs_oracle(s, k) for s in cfg.seeds])]
        note = (f"{cfg.t6_size} synthetic samples per trained row, {100 * cfg.main_drop:g} % most uncertain dropped "
                "(for the parts: a pixel's uncertainty is its distance to the nearest centroid over the distance to "
                f"the nearest centroid of another class). Parts: {cfg.parts_samples} generated images x 1024 pixels "
                "clustered on standardised, level-weighted, L2-normalised hypercolumns; each cluster takes the class "
                f"most of its pixels have in the {k} annotated image(s). The last row scores cluster maps, not a "
                "segmenter, on generated images: each cluster mapped to the oracle class most of its pixels have "
                "there.")
        return Table("parts", "discovered parts (Segmentation in Style) against DatasetGAN", rows, note)

    def plan(self, tables: list[str]) -> list[Table]:
        """The requested tables; their cells are queued in self.jobs (shared cells once)."""
        makers = {"1": self.table1, "3": self.table3, "4": self.table4, "6": self.table6, "gap": self.gap,
                  "sampling": self.sampling, "parts": self.parts_table}
        return [makers[t]() for t in tables]

    def run(self, tables: list[str]) -> list[Table]:
        self.check_protocol()
        planned = self.plan(tables)
        with progress_bar(total=len(self.jobs), show=self.progress, desc="cells", unit="cell") as bar:
            for i, (key, compute) in enumerate(self.jobs.items(), 1):
                result = self.cached("cells", key, compute)
                how = f"{result['seconds']:.0f} s" if key in self.computed else "cached"
                bar.write(f"[bench] cell {i}/{len(self.jobs)} {key}: mIoU {100 * result['miou']:.1f} %, "
                          f"pixel accuracy {100 * result['pixel_accuracy']:.1f} % ({how})")
                sys.stdout.flush()  # one line per cell, also when stdout is a file
                bar.update()
        return planned


# ---- reporting ---------------------------------------------------------------------------


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "per_seed": values}


def class_means(cells: list[dict]) -> list[float | None]:
    """Each class's IoU, mean over the cells (seeds) where it is defined."""
    columns = zip(*(cell["iou"] for cell in cells))
    return [None if all(v is None for v in column) else statistics.fmean(v for v in column if v is not None)
            for column in columns]


def table_json(table: Table, cells: dict[str, dict]) -> dict:
    rows = [{"label": r.label, "column": r.column, "cells": r.keys,
             "miou": summary([cells[k]["miou"] for k in r.keys]),
             "pixel_accuracy": summary([cells[k]["pixel_accuracy"] for k in r.keys]),
             "iou": class_means([cells[k] for k in r.keys])} for r in table.rows]
    out = {"title": table.title, "note": table.note, "rows": rows,
           "curves": {r.label: cells[r.keys[0]]["curve"] for r in table.rows if r.label in table.curves}}
    if table.compare is not None:
        first, second = (table.rows[i] for i in table.compare)
        out["difference"] = {"rows": [first.label, second.label], **summary(
            [cells[a]["miou"] - cells[b]["miou"] for a, b in zip(first.keys, second.keys)])}
    return out


def percent(stat: dict) -> str:
    spread = "" if stat["std"] is None else f" ± {100 * stat['std']:.1f}"
    return f"{100 * stat['mean']:.1f}{spread}"


def table_markdown(name: str, table: dict, class_names: list[str]) -> list[str]:
    lines = [f"## {'Table ' + name if name.isdigit() else name.capitalize()}: {table['title']}", ""]
    columns = list(dict.fromkeys(r["column"] for r in table["rows"]))
    if columns == [""]:
        lines += ["| training data | mIoU % | pixel accuracy % | " + " | ".join(class_names) + " |",
                  "|---" * (3 + len(class_names)) + "|"]
        lines += [f"| {r['label']} | {percent(r['miou'])} | {percent(r['pixel_accuracy'])} | "
                  + " | ".join("-" if v is None else f"{100 * v:.0f}" for v in r["iou"]) + " |" for r in table["rows"]]
    else:  # Table 6: annotated images x how they were picked, mIoU
        grid = {(r["label"], r["column"]): percent(r["miou"]) for r in table["rows"]}
        labels = list(dict.fromkeys(r["label"] for r in table["rows"]))
        lines += ["| annotated | " + " | ".join(f"{c}, mIoU %" for c in columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(grid[label, c] for c in columns) + " |" for label in labels]
    lines += [""] + [table["note"]] if table["note"] else []
    if "difference" in table:
        d = table["difference"]
        ratio = "" if not d["std"] else f" = {d['mean'] / d['std']:.1f} std"
        lines += ["", f"Per-seed difference, {d['rows'][0]} minus {d['rows'][1]}: "
                      f"{percent(d)} mIoU points (mean{ratio}; per seed "
                      f"{', '.join(f'{100 * v:.1f}' for v in d['per_seed'])})."]
    for label, curve in table.get("curves", {}).items():
        lines += ["", f"Learning curve (first seed), {label.strip()}: mIoU % on every test image at step "
                      + ", ".join(f"{step}: {100 * miou:.1f}" for step, miou in curve) + "."]
    return lines + [""]


def results_markdown(results: dict) -> str:
    cfg = results["protocol"]
    seeds = ", ".join(map(str, cfg["seeds"]))
    setup = (f"Generator `{cfg['generator']}`, {results['annotations']} annotated samples; seeds {seeds} (each "
             "sets the interpreter, the generation seeds and the segmenter); segmenter "
             f"{cfg['segmenter']['architecture']} from scratch, {cfg['segmenter']['steps']} steps of batch "
             f"{cfg['segmenter']['batch_size']} (or the whole set when smaller) for every training set; tested on "
             f"{cfg['n_test']} `real_test` images of the world, each row at the checkpoint (of "
             f"{cfg['segmenter']['checkpoints']}) that the paper's 5-fold protocol picks. mIoU and pixel accuracy in "
             "%, mean ± sample std over seeds.")
    lines = ["# DatasetGAN's experiments on the faces world", "", setup, ""]
    for name, table in results["tables"].items():
        lines += table_markdown(name, table, results["classes"])
    pointer = ("Not re-run here: see the section \"Style interpreter vs the materialised design\" of "
               "bench/RESULTS.md (`python bench/interpreter.py`).")
    lines += ["## Interpreter memory and time", "", pointer, "", f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


def run_benchmark(cfg: BenchConfig, out: str | Path, tables: Sequence[str | int] = TABLES,
                  device: torch.device | str = "auto", command: str = "", painter: Painter | None = None,
                  progress: bool = True) -> dict:
    """Compute the requested tables (reusing every finished cell in `out`); write and return the results."""
    tables = [str(t) for t in tables]
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise DatasetGANError(f"unknown table(s) {', '.join(unknown)}: choose from {', '.join(TABLES)}")
    out, started = Path(out), time.monotonic()
    experiment = Experiment(cfg, out, resolve_device(device), painter, progress)
    planned = experiment.run([t for t in TABLES if t in tables])
    cells = {key: json.loads((out / "cells" / f"{key}.json").read_text()) for key in experiment.jobs}
    results = {"command": command, "protocol": cfg.model_dump(mode="json"), "annotations": len(experiment.ids),
               "classes": [c.name for c in experiment.classes],
               "tables": {t.name: table_json(t, cells) for t in planned}, "cells": cells,
               "this_run": {"computed": experiment.computed, "seconds": round(time.monotonic() - started, 1)}}
    write_json(out / "results.json", results)
    markdown = results_markdown(results)
    atomic_write(out / "results.md", lambda tmp: Path(tmp).write_text(markdown))
    print("\n" + markdown)
    return results
