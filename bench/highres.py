"""High resolution: a 1024 px StyleGAN2 workspace on the CPU, ours vs the paper's materialised design.

    python bench/highres.py            # 1024 px, 16 images: 12-17 minutes on a loaded 2-core CPU, < 13 GiB
    python bench/highres.py --quick    # 256 px, small channels, 4 images: smoke run, about a minute
    python bench/highres.py --arch stylegan3-t   # a standard StyleGAN3-T 1024: ours only (steps 1 and 2, fp16)

Set-up, as a user would do it: a standard 1024x1024 StyleGAN2 (z = w = 512, 8 mapping layers,
channel_base 32768, channel_max 512; random weights: memory and speed do not depend on them),
saved once with `save_generator`; a workspace per training run (`Workspace.init`, 10 classes,
`features.half_precision` on or off); 16 candidates from `Pipeline.sample`, each annotated with
its brightness deciles (`save_mask`). The feature grid is 512 (`FeatureSettings.max_resolution`).

Measurements, each in a fresh subprocess (`_measure`): peak RSS absolute and above the child's
baseline (imports, generator load, a tiny interpreter warm-up that pages in the kernels' code).
  1. `Pipeline.train` with fp16 and fp32 pyramid storage. One epoch of 16 images is 65,536
     batches (hours here) and the paper's stopping rule acts from epoch 4, so the workspace sets
     max_epochs = min_epochs = 1 (the rule never fires) and the child cuts that epoch to
     `batches` batches; `train` otherwise runs unchanged, synthesis and saving included.
     fp32 runs at n images if twice the fp16 run's memory fits, else at n/4 and n/2 images,
     extrapolated linearly to n and marked as such.
  2. Labelling one 1024 px image: `factory.label_ws` (synthesis, labels, uncertainty).
  3. The paper's design: every pixel's hypercolumn of every annotated image on the 512 grid,
     as one [N*512*512, D] table in fp16 plus its fp32 copy (as the official code keeps them),
     trained on through the same ensemble; measured on 1 image (2 need more than the cap) and
     extrapolated to N by the exact size of the table's rows. Its labelling: materialised
     hypercolumns through `predict_probs_naive` (tests/references.py).
  4. fp16 vs fp32 storage: hypercolumn error, and predictions of interpreters trained on the
     same images with the same batches, one from each storage.
With `--arch stylegan3-t` the generator is NVIDIA's standard StyleGAN3-T 1024 config (z = w = 512,
2 mapping layers, channel_base 32768, channel_max 512, random weights) and only our design is
measured (training with fp16 storage, labelling): the naive design's cost is the same per
feature and pixel for every architecture, and is measured on StyleGAN2.
Every child runs under a memory guard (`run_in_child_capped`): killed above CAP_GIB of RSS or
when the machine runs low, so the benchmark never pushes the shared machine into swap or OOM.
Children import a copy of src/ taken at the start: edits during a run cannot mix versions.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the naive references
import _measure  # noqa: E402
from references import predict_probs_naive  # noqa: E402

from datasetgan import pipeline as pipeline_module  # noqa: E402
from datasetgan.annotation import read_annotation  # noqa: E402
from datasetgan.factory import label_ws  # noqa: E402
from datasetgan.features import gather, resize, shrink_pyramid  # noqa: E402
from datasetgan.formats.masks import save_mask  # noqa: E402
from datasetgan.generators.base import Generator  # noqa: E402
from datasetgan.generators.checkpoint import save_generator  # noqa: E402
from datasetgan.generators.stylegan2 import StyleGAN2Generator  # noqa: E402
from datasetgan.generators.stylegan3 import StyleGAN3Generator  # noqa: E402
from datasetgan.interpreter import _SHUFFLE, InterpreterConfig, StyleInterpreter, _member_generator  # noqa: E402
from datasetgan.uncertainty import mutual_information, vote  # noqa: E402
from datasetgan.labels import parse_class_names  # noqa: E402
from datasetgan.pipeline import Pipeline  # noqa: E402
from datasetgan.workspace import Workspace  # noqa: E402

GIB = 2**30
CAP_GIB = 14.5  # per child; the guard polls, so add a few hundred MiB of overshoot: < 16 GB
PLAN_GIB = 13.0  # a run is attempted at full size only if its predicted peak is below this
TARGET_GB = 8.0  # the issue's target for training on 16 images at 1024 px (fp16 storage)


@dataclass(frozen=True)
class Setting:
    name: str
    resolution: int
    z_dim: int  # = w_dim
    mapping_layers: int
    channel_base: int
    channel_max: int
    images: int = 16
    classes: int = 10
    batches: int = 300  # training batches per run, ours and naive
    label_seed: int = 1_000_000  # the image labelled in steps 2-4 (not an annotated one)
    architecture: str = "stylegan2"


FULL = Setting("standard-1024", 1024, 512, 8, 32768, 512)
QUICK = Setting("quick-256 (smoke run)", 256, 128, 4, 8192, 256, images=4, batches=50)
STYLEGAN3_T = Setting("stylegan3-t-1024", 1024, 512, 2, 32768, 512, architecture="stylegan3-t")


# ---- child side: set-up ----


def start(root: str, threads: int) -> tuple[Workspace, Generator]:
    """What every child does first: threads, the workspace's generator, warm-up, baseline."""
    torch.set_num_threads(threads)
    workspace = Workspace.open(root)
    generator = Pipeline(workspace, "cpu").generator
    warm_up(workspace.num_classes)
    _measure.mark_baseline()
    return workspace, generator


def warm_up(classes: int) -> None:
    """Each interpreter path once on a tiny pyramid, so the measured work is not charged the
    ~200 MiB of kernel code pages and lazy imports a process maps on first use."""
    torch.manual_seed(1)
    pyramid = [torch.randn(2, 4, r, r) for r in (4, 4, 8)]
    masks = torch.randint(0, classes, (2, 8, 8), dtype=torch.uint8)
    config = InterpreterConfig(num_classes=classes, members=2, min_epochs=1, max_epochs=1)
    for dtype in (torch.float32, torch.float16):
        interpreter = StyleInterpreter(config, [4, 4, 4])
        interpreter.fit([level.to(dtype) for level in pyramid], masks, progress=False)
    interpreter.label(pyramid)
    predict_probs_naive(interpreter, pyramid)


def brightness_classes(image: np.ndarray, classes: int) -> np.ndarray:
    """A deterministic annotation: each pixel's brightness decile within its image, [H, W] uint8."""
    lum = torch.from_numpy(image).float().mean(-1)
    cuts = torch.quantile(lum.flatten(), torch.linspace(0, 1, classes + 1)[1:-1])
    return torch.bucketize(lum, cuts).to(torch.uint8).numpy()


def per_image_values(generator: Generator, size: int) -> tuple[int, int]:
    """Values of one image's pyramid: native, and as stored for training (no finer than `size`)."""
    native = stored = 0
    for channels, res in zip(generator.feature_channels, generator.feature_resolutions, strict=True):
        native += channels * res * res
        stored += channels * min(res, size) ** 2
    return native, stored


def prepare(s: dict, tmp: str, threads: int) -> dict:
    """Generator file, source workspace, 16 sampled and annotated candidates."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    common = dict(z_dim=s["z_dim"], c_dim=0, w_dim=s["z_dim"], img_resolution=s["resolution"], img_channels=3,
                  mapping_kwargs={"num_layers": s["mapping_layers"]})
    channels = {"channel_base": s["channel_base"], "channel_max": s["channel_max"]}
    if s["architecture"] == "stylegan3-t":
        network = StyleGAN3Generator(**common, **channels)
    else:
        network = StyleGAN2Generator(**common, synthesis_kwargs=channels)
    path = Path(tmp) / "generator.safetensors"
    save_generator(network, path)
    workspace = Workspace.init(Path(tmp) / "source", str(path), class_specs(s["classes"]))
    pipeline = Pipeline(workspace, "cpu")
    generator = pipeline.generator
    _measure.mark_baseline()
    begin = time.perf_counter()
    ids = pipeline.sample(range(s["images"]))
    sample_s = time.perf_counter() - begin
    colors = [c.color for c in workspace.config.classes]
    for cid in ids:
        image = np.array(Image.open(workspace.candidate_image(cid)).convert("RGB"))
        save_mask(workspace.annotation_path(cid), brightness_classes(image, s["classes"]), colors)
    size = workspace.config.features.resolve(generator.resolution)
    native, stored = per_image_values(generator, size)
    return {"sample_s": sample_s, "memory": _measure.memory(), "generator": str(path), "ids": ids,
            "feature_dim": sum(generator.feature_channels), "size": size, "native_values": native,
            "stored_values": stored, "members": InterpreterConfig(num_classes=s["classes"]).members,
            "library": str(Path(pipeline_module.__file__).parent)}


def class_specs(classes: int):
    return parse_class_names(",".join(["background"] + [f"bright{i}" for i in range(1, classes)]))


# ---- child side: our training ----


def cap_training(batches: int) -> list[float]:
    """Cut `fit`'s (only) epoch to its first `batches` batches and time every step.

    Class-level wraps, because `train` builds the interpreter itself; the batch order, the
    steps and the rest of `train` are untouched.
    """
    times: list[float] = []
    batches_of, step = StyleInterpreter._batches, StyleInterpreter._step

    def first_batches(self, shufflers, num_pixels):
        return itertools.islice(batches_of(self, shufflers, num_pixels), batches)

    def timed_step(self, *args):
        begin = time.perf_counter()
        out = step(self, *args)
        times.append(time.perf_counter() - begin)
        return out

    StyleInterpreter._batches, StyleInterpreter._step = first_batches, timed_step
    return times


def watch_setup(phases: dict) -> None:
    """Record memory and time around `fit`'s data preparation (merged, channels-last levels):
    before it lies the pyramids' synthesis, after it the steady state of the batches."""
    annotations = StyleInterpreter._annotations

    def recorded(self, *args):
        phases["before"] = memory_now()
        phases["setup_start"] = time.perf_counter()
        data = annotations(self, *args)
        phases["setup_s"] = time.perf_counter() - phases["setup_start"]
        phases["after"] = memory_now()
        return data

    StyleInterpreter._annotations = recorded


def memory_now() -> dict:
    """Resident now and peak so far (MiB), from /proc: ru_maxrss cannot tell phases apart."""
    return {"rss_mib": _measure.status_mib(), "hwm_mib": _measure.status_mib(field="VmHWM")}


def train_ours(s: dict, root: str, threads: int, batches: int) -> dict:
    workspace, generator = start(root, threads)
    times, phases = cap_training(batches), {}
    watch_setup(phases)
    begin = time.perf_counter()
    _, history, report = Pipeline(workspace, "cpu", generator).train(progress=False)
    wall = time.perf_counter() - begin
    return {"wall_s": wall, "synthesis_s": phases["setup_start"] - begin, "setup_s": phases["setup_s"],
            "batch_s": statistics.median(times), "batches_s": sum(times), "batches": history.batches,
            "last_loss": history.epoch_losses[-1], "annotated": report["annotated"],
            "before": phases["before"], "after": phases["after"], "memory": _measure.memory()}


# ---- child side: labelling ----


def label_ws_of(workspace: Workspace, generator: Generator, seed: int) -> torch.Tensor:
    sampling = workspace.config.sampling
    return generator.ws_from_seeds([seed], sampling.psi, sampling.truncation_cutoff)


def label_ours(s: dict, root: str, threads: int) -> dict:
    workspace, generator = start(root, threads)
    interpreter = Pipeline(workspace, "cpu", generator).interpreter
    ws = label_ws_of(workspace, generator, s["label_seed"])
    begin = time.perf_counter()
    _, labels = label_ws(generator, interpreter, ws)
    seconds = time.perf_counter() - begin
    result = {"seconds": seconds, "mask_shape": list(labels.mask.shape), "memory": _measure.memory()}
    begin = time.perf_counter()  # after the memory reading: context, not part of the measurement
    generator.synthesize(ws)
    return result | {"synthesis_s": time.perf_counter() - begin}


def naive_label_ws(generator: Generator, interpreter: StyleInterpreter, ws: torch.Tensor):
    """`factory.label_ws` through materialised hypercolumns: vote, uncertainty, at image size."""
    _, pyramid = generator.synthesize(ws)
    probs = predict_probs_naive(interpreter, pyramid)
    size = (generator.resolution, generator.resolution)
    mask = F.interpolate(vote(probs)[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)
    uncertainty = F.interpolate(mutual_information(probs)[:, None], size=size, mode="bilinear")[:, 0]
    return pyramid, probs, mask, uncertainty


def label_naive(s: dict, root: str, threads: int) -> dict:
    workspace, generator = start(root, threads)
    interpreter = Pipeline(workspace, "cpu", generator).interpreter
    ws = label_ws_of(workspace, generator, s["label_seed"])
    begin = time.perf_counter()
    pyramid, probs, _, _ = naive_label_ws(generator, interpreter, ws)
    result = {"seconds": time.perf_counter() - begin, "memory": _measure.memory()}
    ours = interpreter.predict_probs(pyramid)  # the factorised path on the same pyramid, as a check
    return result | {"max_abs_diff": (ours - probs).abs().max().item(),
                     "vote_agreement": (vote(ours) == vote(probs)).float().mean().item()}


# ---- child side: the paper's materialised design ----


def materialise_image(generator: Generator, ws: torch.Tensor, size: int, table: torch.Tensor,
                      row: int) -> None:
    """One image's hypercolumns into fp16 table rows, level by level (every level resized to the
    grid in fp32, as `features.hypercolumns`): no image-sized fp32 temporary, so the peak is
    the tables' and grows by exactly their rows per image."""
    _, pyramid = generator.synthesize(ws)
    rows, column = table[row : row + size * size], 0
    for level in pyramid:
        channels = level.shape[1]
        resized = resize(level, size)  # [1, C, S, S], channels-last
        rows[:, column : column + channels] = resized.permute(0, 2, 3, 1).reshape(size * size, channels)
        column += channels


def train_naive(s: dict, root: str, threads: int, images: int, batches: int) -> dict:
    workspace, generator = start(root, threads)
    ids = workspace.annotated_ids()[:images]
    size = workspace.config.features.resolve(generator.resolution)
    targets = torch.stack([read_annotation(workspace, cid, size) for cid in ids]).flatten().long()
    begin = time.perf_counter()
    table16 = torch.empty(images * size * size, sum(generator.feature_channels), dtype=torch.float16)
    for i, ws in enumerate(workspace.ws_for(ids)):
        materialise_image(generator, ws[None], size, table16, i * size * size)
    table32 = table16.float()  # the official code's FloatTensor copy; both stay alive there
    build_s = time.perf_counter() - begin
    config = InterpreterConfig(num_classes=workspace.num_classes, feature_resolution=size)
    times = naive_batches(StyleInterpreter(config, generator.feature_channels), table32, targets, batches)
    return {"build_s": build_s, "batch_s": statistics.median(times), "batches": len(times),
            "table_gib": (table16.numel() * 2 + table32.numel() * 4) / GIB, "memory": _measure.memory()}


def naive_batches(interpreter: StyleInterpreter, table: torch.Tensor, targets: torch.Tensor,
                  batches: int) -> list[float]:
    """`fit`'s steps (same ensemble, batch order and Adam) reading rows of the table; times."""
    cfg = interpreter.config
    optimizer = torch.optim.Adam(interpreter.parameters(), lr=cfg.lr)
    pixels = (targets != cfg.ignore_index).nonzero().squeeze(1)
    shufflers = [_member_generator(cfg.seed, m, _SHUFFLE) for m in range(cfg.members)]
    interpreter.train()
    times = []
    for batch in itertools.islice(interpreter._batches(shufflers, len(pixels)), batches):
        begin = time.perf_counter()
        where = pixels[batch].flatten()
        logits = interpreter.ensemble(table[where].view(*batch.shape, -1))
        losses = F.cross_entropy(logits.flatten(0, 1), targets[where], reduction="none")
        optimizer.zero_grad(set_to_none=True)
        losses.view(batch.shape).mean(1).sum().backward()
        optimizer.step()
        times.append(time.perf_counter() - begin)
    return times


# ---- child side: fp16 vs fp32 storage ----


def precision(s: dict, half_root: str, full_root: str, threads: int, pixels: int = 20_000) -> dict:
    """Hypercolumn error of fp16 storage, and what it does to trained interpreters' predictions."""
    workspace, generator = start(full_root, threads)
    size = workspace.config.features.resolve(generator.resolution)
    _, pyramid = generator.synthesize(label_ws_of(workspace, generator, s["label_seed"]))
    exact = shrink_pyramid(pyramid, size, torch.float32)
    half = shrink_pyramid(pyramid, size, torch.float16)
    stored_err = max((a - b.float()).abs().max().item() for a, b in zip(exact, half, strict=True))
    rng = torch.Generator().manual_seed(0)
    ys, xs = (torch.randint(0, size, (pixels,), generator=rng) for _ in range(2))
    col32, col16 = gather(exact, ys, xs, size), gather(half, ys, xs, size)
    err = (col32 - col16).abs()
    trained16 = Pipeline(Workspace.open(half_root), "cpu", generator).interpreter
    trained32 = Pipeline(workspace, "cpu", generator).interpreter
    p16, p32 = trained16.predict_probs(exact), trained32.predict_probs(exact)
    p32_half = trained32.predict_probs(half)  # same weights, fp16-rounded input: inference alone
    return {"stored_max_abs": stored_err, "value_max_abs": max(a.abs().max().item() for a in exact),
            "column_max_abs": err.max().item(), "column_mean_abs": err.mean().item(),
            "pixels": pixels,
            "trained_max_abs": (p16 - p32).abs().max().item(), "trained_mean_abs": (p16 - p32).abs().mean().item(),
            "trained_vote": (vote(p16) == vote(p32)).float().mean().item(),
            "input_max_abs": (p32_half - p32).abs().max().item(),
            "input_vote": (vote(p32_half) == vote(p32)).float().mean().item()}


CHILDREN = {f.__name__: f for f in (prepare, train_ours, label_ours, label_naive, train_naive, precision)}


# ---- parent side: planning and orchestration ----


def fp32_sizes(s: Setting, fp16: dict) -> list[int]:
    """Image counts for the fp32 runs: n if twice the fp16 run's memory above baseline fits
    (an upper bound: only the pyramids double), else n/4 and n/2 for the extrapolation."""
    if "error" not in fp16 and (fp16["memory"]["peak_mib"] + fp16["memory"]["above_mib"]) / 1024 < PLAN_GIB:
        return [s.images]
    return [s.images // 4, s.images // 2]


def make_workspace(tmp: Path, info: dict, s: Setting, half: bool, images: int) -> Path:
    """A workspace with the source's candidates and its first `images` annotations."""
    root = tmp / f"{'fp16' if half else 'fp32'}-{images}"
    workspace = Workspace.init(root, info["generator"], class_specs(s.classes),
                               features={"half_precision": half},
                               interpreter={"max_epochs": 1, "min_epochs": 1})
    source = Workspace.open(tmp / "source")
    shutil.copytree(source.candidates_dir, workspace.candidates_dir, dirs_exist_ok=True)
    for cid in info["ids"][:images]:
        shutil.copyfile(source.annotation_path(cid), workspace.annotation_path(cid))
    return root


def child(name: str, s: Setting, **kwargs) -> dict:
    """Run one measurement under the memory guard; a killed child is reported, not fatal."""
    print(f"  {name} {kwargs}  (available {_measure.available_mib() / 1024:.1f} GiB)", flush=True)
    begin = time.perf_counter()
    try:
        result = _measure.run_in_child_capped(__file__, name, cap_mib=CAP_GIB * 1024, timeout=1200,
                                              s=asdict(s), **kwargs)
    except _measure.MemoryCap as exc:
        print(f"    {exc}", flush=True)
        return {"error": str(exc)}
    print(f"    {time.perf_counter() - begin:.0f} s: {brief(result)}", flush=True)
    return result


def brief(result: dict) -> str:
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    if "memory" in result:
        flat["peak_gib"] = result["memory"]["peak_mib"] / 1024
        flat["above_gib"] = result["memory"]["above_mib"] / 1024
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items())


def run_ours(s: Setting, threads: int, tmp: Path) -> dict:
    """Our design alone: training on n images with fp16 storage, labelling one image."""
    common = {"threads": threads}
    out = {"info": child("prepare", s, tmp=str(tmp), **common), "train": {}, "naive": {}}
    root = make_workspace(tmp, out["info"], s, True, s.images)
    out["train"][(True, s.images)] = child("train_ours", s, root=str(root), batches=s.batches, **common)
    out["label_ours"] = child("label_ours", s, root=str(root), **common)
    return out


def run(s: Setting, threads: int, tmp: Path) -> dict:
    common = {"threads": threads}
    out = {"info": child("prepare", s, tmp=str(tmp), **common), "train": {}}

    def train(half: bool, images: int) -> dict:
        root = make_workspace(tmp, out["info"], s, half, images)
        result = child("train_ours", s, root=str(root), batches=s.batches, **common) | {"root": str(root)}
        out["train"][(half, images)] = result
        return result

    headline = train(True, s.images)
    for images in fp32_sizes(s, headline):
        train(False, images)
    pair = max(n for half, n in out["train"] if not half)
    if (True, pair) not in out["train"]:
        train(True, pair)  # the fp16 vs fp32 comparison needs both on the same images
    out["label_ours"] = child("label_ours", s, root=headline["root"], **common)
    out["label_naive"] = child("label_naive", s, root=headline["root"], **common)
    out["naive"] = {n: child("train_naive", s, root=str(tmp / "source"), images=n, batches=s.batches, **common)
                    for n in naive_sizes(s, out["info"])}
    out["pair"] = pair
    out["precision"] = child("precision", s, half_root=out["train"][(True, pair)]["root"],
                             full_root=out["train"][(False, pair)]["root"], **common)
    return out


def naive_row_bytes(info: dict) -> float:
    """Bytes per labelled pixel of the paper's design: an fp16 and an fp32 table row, plus the
    int64 target, pixel index and one shuffle index per member."""
    return info["feature_dim"] * (2 + 4) + 8 * (2 + info["members"])


def naive_sizes(s: Setting, info: dict) -> list[int]:
    """1 image, and 2 where their tables fit."""
    two = info["memory"]["baseline_mib"] / 1024 + 2 * naive_row_bytes(info) * info["size"] ** 2 / GIB
    return [1, 2] if two < PLAN_GIB else [1]


# ---- parent side: report ----


def gib(mib: float) -> str:
    return f"{mib / 1024:.2f}"


def ours_rows(s: Setting, out: dict) -> list[list[str]]:
    rows = []
    for (half, n), r in sorted(out["train"].items(), key=lambda kv: (not kv[0][0], -kv[0][1])):
        design = f"ours, {'fp16' if half else 'fp32'} pyramids"
        if "error" in r:
            rows.append(["train interpreter", design, str(n), "-", "-", "-", r["error"]])
            continue
        time_text = (f"set-up {r['synthesis_s'] + r['setup_s']:.0f} s (synthesis {r['synthesis_s']:.0f}) "
                     f"+ {1000 * r['batch_s']:.0f} s / 1000 batches")
        how = f"measured: {r['batches']} batches, train() wall {r['wall_s']:.0f} s"
        rows.append(["train interpreter", design, str(n), gib(r["memory"]["peak_mib"]), gib(r["memory"]["above_mib"]),
                     time_text, how])
    if (False, s.images) not in out["train"] and len(out["train"]) > 1:
        rows.append(extrapolated_fp32(s, out))
    return rows


def extrapolated_fp32(s: Setting, out: dict) -> list[str]:
    """fp32 at n images, linear through the fp32 runs at n/4 and n/2."""
    head = ["train interpreter", "ours, fp32 pyramids", str(s.images)]
    a, b = out["train"][(False, s.images // 4)], out["train"][(False, s.images // 2)]
    if "error" in a or "error" in b:
        return head + ["-", "-", "-", "not extrapolated: a run failed"]
    slope = (b["memory"]["above_mib"] - a["memory"]["above_mib"]) / (s.images // 2 - s.images // 4)
    above = b["memory"]["above_mib"] + slope * (s.images - s.images // 2)
    synth_per_image = (b["synthesis_s"] - a["synthesis_s"]) / (s.images // 2 - s.images // 4)
    setup = b["synthesis_s"] + b["setup_s"] + synth_per_image * (s.images - s.images // 2)
    return head + [f"**{gib(b['memory']['baseline_mib'] + above)}**", f"**{gib(above)}**",
                   f"set-up ~{setup:.0f} s + {1000 * b['batch_s']:.0f} s / 1000 batches",
                   (f"**extrapolated** linearly from n={s.images // 4}, {s.images // 2} ({gib(slope)} GiB per "
                    f"image); not run: predicted over the {PLAN_GIB:.0f} GiB limit")]


def naive_rows(s: Setting, out: dict) -> list[list[str]]:
    info, naive, rows = out["info"], out["naive"], []
    for n, r in naive.items():
        if "error" in r:
            rows.append(["train interpreter", "naive (paper)", str(n), "-", "-", "-", r["error"]])
            continue
        rows.append(["train interpreter", "naive (paper)", str(n), gib(r["memory"]["peak_mib"]),
                     gib(r["memory"]["above_mib"]),
                     f"table build {r['build_s']:.0f} s + {1000 * r['batch_s']:.0f} s / 1000 batches",
                     f"measured: {r['batches']} batches, tables {r['table_gib']:.2f} GiB"])
    one = naive[1]
    if s.images not in naive and "error" not in one:
        per_image_mib = naive_row_bytes(info) * info["size"] ** 2 / 2**20
        above = one["memory"]["above_mib"] + (s.images - 1) * per_image_mib
        rows.append(["train interpreter", "naive (paper)", str(s.images),
                     f"**{gib(one['memory']['baseline_mib'] + above)}**", f"**{gib(above)}**",
                     f"table build ~{s.images * one['build_s']:.0f} s + {1000 * one['batch_s']:.0f} s / 1000 batches",
                     f"**extrapolated**: n=1 + {s.images - 1} x {gib(per_image_mib)} GiB (table rows per image)"])
    return rows


def label_rows(out: dict) -> list[list[str]]:
    rows = []
    for key, design in (("label_ours", "ours (factorised)"), ("label_naive", "naive (materialised)")):
        if key not in out:
            continue
        r = out[key]
        if "error" in r:
            rows.append(["label one image", design, "1", "-", "-", "-", r["error"]])
            continue
        extra = f" (synthesis alone {r['synthesis_s']:.1f} s)" if "synthesis_s" in r else ""
        rows.append(["label one image", design, "1", gib(r["memory"]["peak_mib"]), gib(r["memory"]["above_mib"]),
                     f"{r['seconds']:.1f} s{extra}", "measured"])
    return rows


def markdown(rows: list[list[str]]) -> str:
    header = ["step", "design", "images", "peak RSS, GiB", "above baseline, GiB", "time", "how"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def notes(s: Setting, out: dict) -> list[str]:
    info, lines = out["info"], []
    size, d = info["size"], info["feature_dim"]
    lines.append(f"{s.resolution} px generator, D = {d} features per pixel, feature grid {size}x{size}; "
                 f"one image's pyramid: {info['native_values'] * 4 / GIB:.2f} GiB fp32 native, stored for training "
                 f"{info['stored_values'] * 4 / GIB:.2f} GiB fp32 / {info['stored_values'] * 2 / GIB:.2f} GiB fp16; "
                 f"Pipeline.sample of {s.images} images: {info['sample_s']:.0f} s; children imported {info['library']}")
    headline = out["train"][(True, s.images)]
    if "error" not in headline:
        peak_gb = headline["memory"]["peak_mib"] * 2**20 / 1e9
        verdict = "PASS" if peak_gb < TARGET_GB else "FAIL"
        lines.append(f"target: training on {s.images} images with fp16 storage under {TARGET_GB:.0f} GB: "
                     f"{headline['memory']['peak_mib'] / 1024:.2f} GiB = {peak_gb:.2f} GB -> {verdict}")
        for (half, n), r in out["train"].items():
            if "error" not in r:
                lines.append(phase_note(half, n, r))
    for n, r in out["naive"].items():
        if n == 2 and "error" not in r and "error" not in out["naive"][1]:
            predicted = out["naive"][1]["memory"]["above_mib"] + naive_row_bytes(info) * size**2 / 2**20
            lines.append(f"check of the naive extrapolation: n=2 measured {gib(r['memory']['above_mib'])} GiB above "
                         f"baseline, n=1 + one image's rows predicts {gib(predicted)}")
    if "label_naive" not in out:  # run_ours: nothing of the naive design or the precision check
        return lines
    if 2 not in out["naive"]:
        need = 2 * naive_row_bytes(info) * size**2 / GIB
        lines.append(f"naive at 2 images not run: their tables alone need {need:.1f} GiB, over the {PLAN_GIB:.0f} GiB "
                     "plan limit on this shared 24 GB machine")
    r = out["label_naive"]
    if "error" not in r:
        lines.append(f"labelling, factorised vs materialised on the same pyramid and weights: max abs difference of "
                     f"probabilities {r['max_abs_diff']:.1e}, vote agreement {r['vote_agreement']:.4%}")
    return lines + precision_notes(s, out)


def phase_note(half: bool, n: int, r: dict) -> str:
    return (f"{'fp16' if half else 'fp32'} x {n}: peak {gib(r['before']['hwm_mib'])} GiB during synthesis, "
            f"{gib(r['after']['hwm_mib'])} GiB through fit's data preparation, resident "
            f"{gib(r['after']['rss_mib'])} GiB during the batches; last loss {r['last_loss']:.3f}")


def precision_notes(s: Setting, out: dict) -> list[str]:
    p = out["precision"]
    if "error" in p:
        return [f"precision check failed: {p['error']}"]
    ok = "within" if p["column_max_abs"] <= 1e-3 else "NOT within"
    return [
        (f"fp16 storage, hypercolumns: max abs error {p['column_max_abs']:.2e} over {p['pixels']} random pixels "
         f"(mean {p['column_mean_abs']:.1e}); every stored value: max {p['stored_max_abs']:.2e} for values up to "
         f"{p['value_max_abs']:.2f} (fp16's half-ulp): {ok} 1e-3 absolute"),
        (f"fp16 vs fp32 storage, interpreters trained on the same {out['pair']} images and batches: max abs "
         f"difference of probabilities {p['trained_max_abs']:.2e} (mean {p['trained_mean_abs']:.1e}), vote "
         f"agreement {p['trained_vote']:.4%} (on the held-out seed {s.label_seed})"),
        (f"the fp32-trained interpreter fed the fp16-rounded pyramid (inference alone): max abs difference "
         f"{p['input_max_abs']:.2e}, vote agreement {p['input_vote']:.4%}"),
    ]


REPO = Path(__file__).resolve().parent.parent


def freeze_library(tmp: Path) -> None:
    """Children import the library afresh, so edits to src/ during a run would mix versions in
    one report: they import a copy of src/ taken now (PYTHONPATH comes before the editable install)."""
    shutil.copytree(REPO / "src", tmp / "src", ignore=shutil.ignore_patterns("__pycache__"))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp / "src"), os.environ.get("PYTHONPATH")]))


def source_state() -> str:
    """The commit and a digest of uncommitted changes under src/: the library under test."""
    repo = REPO

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout.strip()

    diff = git("diff", "HEAD", "--", "src")
    changed = git("diff", "HEAD", "--name-only", "--", "src").split()
    digest = hashlib.sha1(diff.encode()).hexdigest()[:10] if diff else "none"
    return f"commit {git('rev-parse', '--short', 'HEAD')}, uncommitted src changes: {changed or 'none'} ({digest})"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 px, small channels, 4 images: a smoke run")
    parser.add_argument("--arch", choices=["stylegan2", "stylegan3-t"], default="stylegan2",
                        help="stylegan3-t: NVIDIA's StyleGAN3-T 1024 config, our design only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every child (default 1)")
    parser.add_argument("--batches", type=int, help="training batches per run (default 300; --quick 50)")
    args = parser.parse_args()
    s = QUICK if args.quick else STYLEGAN3_T if args.arch == "stylegan3-t" else FULL
    s = replace(s, batches=args.batches) if args.batches else s
    command = " ".join(["python bench/highres.py"] + sys.argv[1:])
    began, load_before = time.perf_counter(), load_average()
    print(f"{command}\n{s}\ntorch {torch.__version__}, {args.threads} torch thread(s) per child, "
          f"{os.cpu_count()} CPUs, load average {load_before}, {_measure.available_mib() / 1024:.1f} GiB available",
          flush=True)
    source = source_state()
    print(f"library: {source}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_highres_") as tmp:
        freeze_library(Path(tmp))
        out = (run_ours if s.architecture == "stylegan3-t" else run)(s, args.threads, Path(tmp))
    if source_state() != source:
        print(f"\nnote: src/ changed during the run (now {source_state()}); the children used the copy from the start")
    rows = ours_rows(s, out) + (naive_rows(s, out) if out["naive"] else []) + label_rows(out)
    print(f"\n## Results: {s.name} ({time.perf_counter() - began:.0f} s; load average {load_before} at the start, "
          f"{load_average()} at the end, {os.cpu_count()} CPUs shared with other jobs, "
          f"{args.threads} torch thread(s))\n")
    print(markdown(rows) + "\n")
    for line in notes(s, out):
        print(f"- {line}")
    print(f"- baseline = the child's RSS after imports, generator load and a tiny warm-up; bold = extrapolated; "
          f"each child ran under a {CAP_GIB} GiB RSS guard")
    print(f"\nCommand: `{command}`")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _measure.child_main(CHILDREN, sys.argv[2:])
    else:
        main()
