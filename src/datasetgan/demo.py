"""`datasetgan demo`: DatasetGAN end to end on the built-in faces generator, offline.

1. A workspace on `builtin:faces64` with 16 annotated samples. The annotations ship with
   the package; they were painted by the world oracle standing in for a person (regenerate
   them with `datasetgan world oracle annotate`).
2. The style interpreter is trained on them.
3. A labelled synthetic dataset is generated and its most uncertain 10 % dropped.
4. A segmenter trained on it is tested on the world's real test split, beside the same
   segmenter after self-training on unlabelled real images (the kind the generator was trained
   on; a mean teacher with ClassMix), the same segmenter trained on 16 real labelled images, and the
   fully supervised oracle. Every row trains with one recipe and picks its checkpoint by one
   rule (segment/recipe.py).
5. A table is printed and an HTML report written.
"""

import html
import json
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field
from PIL import Image

from datasetgan.formats.dataset import read_manifest
from datasetgan.formats.masks import load_mask, save_image
from datasetgan.metrics import SegmentationScores
from datasetgan.pipeline import Pipeline
from datasetgan.segment.data import check_same_classes, load_labelled
from datasetgan.segment.mean_teacher import MeanTeacherConfig
from datasetgan.segment.recipe import RECIPE, SELF_TRAINING, Scored, self_train_and_score, train_and_score
from datasetgan.segment.train import SegmenterConfig, evaluate
from datasetgan.viz import grid, heatmap, overlay
from datasetgan.worlds import get_world
from datasetgan.worlds.oracle import load_oracle, render_split

WORLD = "faces"


class DemoConfig(BaseModel):
    """The demo's sizes; the defaults are the documented run, a test runs a tiny one."""

    generator: str = "builtin:faces64"  # a generator of the faces world whose seeds the annotations name
    interpreter: dict = Field(default_factory=dict)  # InterpreterConfig overrides (defaults: the paper's)
    n_generate: int = 2000
    drop_uncertain: float = 0.1
    n_test: int = 1000
    n_unlabelled: int = 2000  # real images without labels, for self-training
    segmenter: SegmenterConfig = RECIPE  # the bench's too
    self_training: MeanTeacherConfig = SELF_TRAINING
    seed: int = 0


def shipped_annotations() -> Path:
    return Path(str(resources.files("datasetgan") / "demo_data" / "faces64-annotations"))


def prepare_workspace(root: Path, cfg: DemoConfig, device: torch.device) -> Pipeline:
    """A fresh workspace holding the shipped annotations and their candidates."""
    if root.exists():
        shutil.rmtree(root)
    return Pipeline.from_annotations(root, cfg.generator, get_world(WORLD).classes,
                                     sorted(shipped_annotations().glob("*.png")), device, interpreter=cfg.interpreter)


def score(name: str, images: torch.Tensor, masks: torch.Tensor, test: tuple, num_classes: int, cfg: DemoConfig,
          device: torch.device) -> Scored:
    print(f"[demo] training the segmenter on {name}: {len(images)} images, {cfg.segmenter.steps} steps")
    return train_and_score(images, masks, test, num_classes, device, cfg.segmenter)


def example_tiles(folder: Path, records: list[dict], colors) -> list[np.ndarray]:
    """image | mask overlay | uncertainty, for each record."""
    tiles = []
    for record in records:
        image = np.asarray(Image.open(folder / "images" / f"{record['name']}.png").convert("RGB"))
        mask = load_mask(folder / "masks" / f"{record['name']}.png")
        uncertainty = np.asarray(Image.open(folder / "uncertainty" / f"{record['name']}.png").convert("L"))
        tiles += [image, overlay(image, mask, colors, 0.6), heatmap(uncertainty.astype(np.float32), 255.0)]
    return tiles


def write_report(out: Path, dataset: Path, rows: dict[str, SegmentationScores], class_names: list[str],
                 colors, seconds: float, generator: str) -> Path:
    records = read_manifest(dataset, kept_only=False)
    kept = [r for r in records if r["kept"]][:12]
    dropped = sorted((r for r in records if not r["kept"]), key=lambda r: -r["score"])[:12]
    save_image(out / "kept.png", grid(example_tiles(dataset, kept, colors), columns=6, scale=3))
    save_image(out / "dropped.png", grid(example_tiles(dataset, dropped, colors), columns=6, scale=3))
    header = "".join(f"<th>{html.escape(n)}</th>" for n in class_names)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td><b>{100 * s.miou:.1f}</b></td><td>{100 * s.pixel_accuracy:.1f}</td>"
        + "".join(f"<td>{'' if v != v else f'{100 * v:.0f}'}</td>" for v in s.iou) + "</tr>"
        for name, s in rows.items())
    page = f"""<!doctype html><meta charset="utf-8"><title>datasetgan demo</title>
<style>body{{font:15px system-ui;margin:2em;max-width:1100px}}td,th{{padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}img{{image-rendering:pixelated;max-width:100%}}</style>
<h1>DatasetGAN on the faces world</h1>
<p>16 annotated samples of <code>{html.escape(generator)}</code> &rarr; style interpreter &rarr; {len(records)} labelled
samples, {len(records) - sum(r['kept'] for r in records)} most uncertain dropped &rarr; segmenter, tested on real
world images. {seconds / 60:.1f} minutes in all.</p>
<h2>mIoU on the real test set (%)</h2>
<table><tr><th>training data</th><th>mIoU</th><th>pixel acc.</th>{header}</tr>{body}</table>
<h2>Kept samples: image, label, uncertainty</h2><img src="kept.png">
<h2>Dropped: the most uncertain</h2><img src="dropped.png">
"""
    (out / "report.html").write_text(page)
    return out / "report.html"


def run_demo(out: Path, device: torch.device, cfg: DemoConfig = DemoConfig()) -> dict[str, float]:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    pipeline = prepare_workspace(out / "workspace", cfg, device)
    workspace, resolution = pipeline.workspace, pipeline.generator.resolution
    print(f"[demo] {len(workspace.annotated_ids())} annotated samples of {cfg.generator}; "
          "training the style interpreter")
    pipeline.train()
    print(f"[demo] generating {cfg.n_generate} labelled samples")
    dataset = pipeline.generate("synthetic", cfg.n_generate, drop_uncertain=cfg.drop_uncertain)
    classes = workspace.label_classes
    test = render_split(WORLD, "real_test", cfg.n_test, resolution)
    synthetic_images, synthetic_masks, synthetic_classes = load_labelled(dataset)
    check_same_classes(synthetic_classes, classes, str(dataset), f"the {WORLD} world")
    synthetic = score("synthetic", synthetic_images, synthetic_masks, test, len(classes), cfg, device)
    unlabelled, _ = render_split(WORLD, "real_train", cfg.n_unlabelled, resolution)
    print(f"[demo] self-training on {len(unlabelled)} unlabelled real images: mean teacher with ClassMix, "
          f"{cfg.self_training.steps or cfg.segmenter.steps} steps from the DatasetGAN segmenter")
    student = self_train_and_score(synthetic.model, synthetic_images, synthetic_masks, unlabelled, test,
                                   len(classes), device, cfg.segmenter, cfg.self_training)
    real_images, real_masks = render_split(WORLD, "real_train", 16, resolution)
    rows = {
        f"DatasetGAN ({len(synthetic_images)} synthetic from 16 annotated)": synthetic.scores,
        f"DatasetGAN + self-training on {len(unlabelled)} unlabelled real": student.scores,
        "16 real labelled images": score("16 real", real_images, real_masks, test, len(classes), cfg, device).scores,
        "fully supervised (oracle, 4000 real)":
            evaluate(load_oracle(WORLD, resolution, device), *test, len(classes), device),
    }
    seconds = time.monotonic() - started
    report = write_report(out, dataset, rows, [c.name for c in classes], [c.color for c in classes], seconds,
                          cfg.generator)
    print("\n| training data | mIoU % |\n|---|---|")
    for name, scores in rows.items():
        print(f"| {name} | {100 * scores.miou:.1f} |")
    print(f"\nreport: {report}   ({seconds / 60:.1f} min)")
    summary = {name: scores.miou for name, scores in rows.items()}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary
