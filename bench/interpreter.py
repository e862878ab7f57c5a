"""Style interpreter: on-demand hypercolumns (ours) vs the paper's materialised table (naive).

    python bench/interpreter.py            # both settings, about 10 minutes on a loaded 2-core CPU
    python bench/interpreter.py --quick    # smoke version: 64 px, 4 images, under a minute

Settings (random generator weights: speed and memory do not depend on them):
  builtin-64    StyleGAN2 64 px, channel_base 2048, channel_max 128, z=w=128, 4 mapping layers
  standard-256  StyleGAN2 256 px, channel_base 16384, channel_max 512, z=w=512, 8 mapping layers
each with 16 annotated images and 10 classes (masks: per-image deciles of a feature map).

Peak memory: one fresh subprocess per measurement, ru_maxrss at its end, absolute and above
the child's baseline (taken after imports, the generator build and a warm-up on a tiny pyramid,
which loads the kernels' code pages that RSS would otherwise charge to the measurement).
  1. training: `StyleInterpreter.fit` on the stored native pyramid (fp32 and fp16) vs the
     paper's design: every pixel's hypercolumn (`hypercolumns` of tests/references.py) materialised as one
     [N*S*S, D] table, kept in fp16 *and* in fp32 as the official code does, and the same
     batched ensemble trained on its fp32 rows. Memory children run `memory_batches` batches;
     batch times come from one child that interleaves the three paths batch by batch (same
     batches, same ensemble and Adam; ours through `fit`'s own `_annotations` and `_step`).
     Where the naive table does not fit (256 px) it is measured on 1 and 2 images and
     extrapolated linearly to 16, marked as such.
  2. inference: one image, all members' probabilities then vote + mutual information, with
     `predict_probs` vs `predict_probs_naive` (same trained weights); max abs difference.
  3. throughput, batch 8: `Generator.synthesize` vs `factory.label_ws` (synthesize + label).
The pyramids are synthesised once, in their own child, and stored; the measurements load them.
Batches: builtin-64 1500 training batches, standard-256 300 (8-12 minutes in all at load 2-4).

Timings: one torch thread by default (--threads). On a shared machine two threads on two busy
cores make every parallel region wait for a descheduled worker, which penalises code made of
many medium-sized ops (ours) more than a few huge ones (naive). Batch times are medians,
repeated timings the best of the repeats; ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from itertools import islice
from pathlib import Path

import _measure  # bench/ is on sys.path: the script's own folder
import numpy as np
import torch
import torch.nn.functional as F

from datasetgan.factory import label_ws
from datasetgan.features import feature_dim
from datasetgan.generators.base import Generator
from datasetgan.generators.stylegan2 import StyleGAN2Generator
from datasetgan.generators.stylegan2_generator import StyleGAN2
from datasetgan.interpreter import (
    _SHUFFLE,
    InterpreterConfig,
    StyleInterpreter,
    _member_generator,
)
from datasetgan.pipeline import synthesize_pyramids
from datasetgan.uncertainty import mutual_information, vote

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from references import hypercolumns, predict_probs_naive  # noqa: E402  (the naive references)

PIXELS_PER_BATCH = 64  # InterpreterConfig's default batch, per member
THROUGHPUT_BATCH = 8


@dataclass(frozen=True)
class Setting:
    name: str
    resolution: int
    z_dim: int  # = w_dim
    mapping_layers: int
    channel_base: int
    channel_max: int
    batches: int  # training batches timed on each side, interleaved (train_speed)
    naive_images: tuple[int, ...]  # annotated images the naive side is measured on
    infer_repeats: int
    throughput_repeats: int
    images: int = 16
    classes: int = 10
    memory_batches: int = 200  # training batches run by each peak-memory child


SETTINGS = [
    Setting("builtin-64", 64, 128, 4, 2048, 128, batches=1500, naive_images=(1, 2, 16),
            infer_repeats=5, throughput_repeats=3),
    Setting("standard-256", 256, 512, 8, 16384, 512, batches=300, naive_images=(1, 2),
            infer_repeats=2, throughput_repeats=1),
]
QUICK = [replace(SETTINGS[0], name="builtin-64 (quick: 4 images)", images=4, batches=100, memory_batches=50,
                 naive_images=(1, 2, 4), infer_repeats=2, throughput_repeats=1)]

TARGETS = {"memory": 20.0, "inference": 5.0, "throughput": 0.5}


# ---- child side: set-up shared by every measurement ----


def build_generator(s: dict) -> Generator:
    torch.manual_seed(0)  # the same random weights in every child
    network = StyleGAN2Generator(
        z_dim=s["z_dim"], c_dim=0, w_dim=s["z_dim"], img_resolution=s["resolution"], img_channels=3,
        mapping_kwargs={"num_layers": s["mapping_layers"]},
        synthesis_kwargs={"channel_base": s["channel_base"], "channel_max": s["channel_max"]},
    )
    return StyleGAN2(network, "cpu")


def start(s: dict, threads: int) -> Generator:
    """Threads, generator, warm-up, then the memory baseline: what every child does first."""
    torch.set_num_threads(threads)
    generator = build_generator(s)
    _measure.mark("imports_and_generator")
    warm_up()
    _measure.mark_baseline()
    return generator


def warm_up() -> None:
    """Every interpreter code path once, on a tiny pyramid.

    RSS counts the code pages of the kernels (and the lazily imported modules, such as the
    optimiser's) a process first uses: 100-200 MiB that would otherwise be charged to every
    measurement and swamp the small ones. Tiny tensors keep the high-water mark low.
    """
    torch.manual_seed(1)
    pyramid = [torch.randn(2, 4, r, r) for r in (4, 4, 8)]
    masks = torch.randint(0, 3, (2, 8, 8), dtype=torch.uint8)
    config = InterpreterConfig(num_classes=3, members=2, min_epochs=1, max_epochs=1)
    for dtype in (torch.float32, torch.float16):
        interpreter = StyleInterpreter(config, [4, 4, 4])
        interpreter.fit([level.to(dtype) for level in pyramid], masks, progress=False)
    label_one(interpreter.predict_probs, pyramid)
    label_one(partial(predict_probs_naive, interpreter), pyramid)
    interpreter.label(pyramid)
    materialise(pyramid, 8).float()


def decile_masks(pyramid: list[torch.Tensor], classes: int) -> torch.Tensor:
    """Deterministic label maps [N, S, S] uint8: each pixel's decile (for 10 classes) of the finest
    level's channel mean within its image. Any labels do: speed and memory do not depend on them."""
    finest = pyramid[-1].float().mean(1)
    values = finest.flatten(1)
    cuts = torch.quantile(values, torch.linspace(0, 1, classes + 1)[1:-1], dim=1).T.contiguous()
    return torch.searchsorted(cuts, values.contiguous()).to(torch.uint8).view_as(finest)


# Pyramids are stored as raw files, one per level: np.fromfile reads the first n images straight
# into private memory (no mmap pages counted in RSS, no temporary copy).
_NP = {torch.float32: np.float32, torch.float16: np.float16}
_TAG = {torch.float32: "f32", torch.float16: "f16"}


def save_pyramid(workdir: Path, pyramid: list[torch.Tensor], masks: torch.Tensor) -> None:
    for i, level in enumerate(pyramid):
        for dtype in _NP:
            level.to(dtype).numpy().tofile(workdir / f"{_TAG[dtype]}_l{i}.bin")
    masks.numpy().tofile(workdir / "masks.bin")
    meta = {"shapes": [list(level.shape) for level in pyramid], "masks": list(masks.shape)}
    (workdir / "meta.json").write_text(json.dumps(meta))


def load_pyramid(workdir: Path, dtype: torch.dtype, n: int) -> list[torch.Tensor]:
    levels = []
    for i, shape in enumerate(json.loads((workdir / "meta.json").read_text())["shapes"]):
        count = n * math.prod(shape[1:])
        data = np.fromfile(workdir / f"{_TAG[dtype]}_l{i}.bin", dtype=_NP[dtype], count=count)
        levels.append(torch.from_numpy(data).view(n, *shape[1:]))
    return levels


def load_masks(workdir: Path, n: int) -> torch.Tensor:
    _, h, w = json.loads((workdir / "meta.json").read_text())["masks"]
    return torch.from_numpy(np.fromfile(workdir / "masks.bin", dtype=np.uint8, count=n * h * w)).view(n, h, w)


def new_interpreter(s: dict, generator: Generator) -> StyleInterpreter:
    return StyleInterpreter(InterpreterConfig(num_classes=s["classes"]), generator.feature_channels)


# ---- child side: the measurements ----


def prep(s: dict, workdir: str, threads: int) -> dict:
    """Synthesise the annotated images' pyramids with `pipeline.synthesize_pyramids` and store them."""
    generator = start(s, threads)
    ws = generator.ws_from_seeds(range(s["images"]))
    started = time.perf_counter()
    pyramid = synthesize_pyramids(generator, ws, s["resolution"])
    result = {"seconds": time.perf_counter() - started, "memory": _measure.memory()}
    save_pyramid(Path(workdir), pyramid, decile_masks(pyramid, s["classes"]))
    return result | {"pyramid_mib": sum(level.numel() for level in pyramid) * 4 / 2**20,
                     "feature_dim": feature_dim(pyramid)}


class _Budget(Exception):
    """Raised from inside `fit` once the batch budget is spent."""


def limit_steps(interpreter: StyleInterpreter, batches: int) -> list[float]:
    """Time each of `fit`'s optimisation steps and stop it after `batches` of them.

    `fit` looks `_step` up at every batch, so an instance attribute wraps it; the real
    training loop, data preparation and batch order stay untouched.
    """
    times: list[float] = []
    step = interpreter._step

    def timed(*args):
        if len(times) == batches:
            raise _Budget
        begin = time.perf_counter()
        out = step(*args)
        times.append(time.perf_counter() - begin)
        return out

    interpreter._step = timed
    return times


def train_ours(s: dict, workdir: str, threads: int, dtype: str, batches: int, save: bool) -> dict:
    generator = start(s, threads)
    folder = Path(workdir)
    pyramid = load_pyramid(folder, getattr(torch, dtype), s["images"])
    masks = load_masks(folder, s["images"])
    interpreter = new_interpreter(s, generator)
    times = limit_steps(interpreter, batches)
    begin = time.perf_counter()
    try:
        interpreter.fit(pyramid, masks, progress=False)
    except _Budget:
        pass
    wall = time.perf_counter() - begin
    result = {"setup_s": wall - sum(times), "memory": _measure.memory()}
    if save:  # the weights the inference measurements use
        interpreter.save(folder / "interpreter")
    return result


def materialise(pyramid: list[torch.Tensor], size: int) -> torch.Tensor:
    """The paper's table: every pixel's hypercolumn as a row [N*S*S, D], fp16, image by image."""
    n, pixels = pyramid[0].shape[0], size * size
    table = torch.empty(n * pixels, feature_dim(pyramid), dtype=torch.float16)
    for i in range(n):
        columns = hypercolumns([level[i : i + 1] for level in pyramid], size)  # [1, D, S, S] fp32
        table[i * pixels : (i + 1) * pixels] = columns.permute(0, 2, 3, 1).reshape(pixels, -1)
    return table


def train_naive(s: dict, workdir: str, threads: int, images: int, batches: int) -> dict:
    generator = start(s, threads)
    pyramid = load_pyramid(Path(workdir), torch.float32, images)
    targets = load_masks(Path(workdir), images).flatten().long()
    begin = time.perf_counter()
    table16 = materialise(pyramid, s["resolution"])
    table32 = table16.float()  # the official code's FloatTensor copy; both stay alive there
    build_s = time.perf_counter() - begin
    del pyramid  # the paper's design needs only the table from here on
    interpreter = new_interpreter(s, generator)
    step = naive_trainer(interpreter, table32, targets)
    for batch in islice(batch_order(interpreter, targets), batches):
        step(batch)
    return {"setup_s": build_s, "memory": _measure.memory(),
            "table_mib": (table16.numel() * 2 + table32.numel() * 4) / 2**20}


def naive_trainer(interpreter: StyleInterpreter, table: torch.Tensor, targets: torch.Tensor):
    """One training step of the paper's design: `StyleInterpreter._step` reading table rows."""
    optimizer = torch.optim.Adam(interpreter.parameters(), lr=interpreter.config.lr)
    pixels = labelled(interpreter, targets)
    interpreter.train()

    def step(batch: torch.Tensor) -> list[float]:
        where = pixels[batch].flatten()
        logits = interpreter.ensemble(table[where].view(*batch.shape, -1))
        losses = F.cross_entropy(logits.flatten(0, 1), targets[where], reduction="none")
        losses = losses.view(batch.shape).mean(1)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        return losses.tolist()  # fit's loop reads the losses every batch too

    return step


def ours_trainer(interpreter: StyleInterpreter, pyramid: list[torch.Tensor], masks: torch.Tensor):
    """One training step exactly as `fit` runs it (same data preparation, same `_step`)."""
    optimizer = torch.optim.Adam(interpreter.parameters(), lr=interpreter.config.lr)
    data = interpreter._annotations(pyramid, masks)
    interpreter.train()
    return lambda batch: interpreter._step(data, batch, optimizer).tolist()


def labelled(interpreter: StyleInterpreter, targets: torch.Tensor) -> torch.Tensor:
    return (targets != interpreter.config.ignore_index).nonzero().squeeze(1)


def batch_order(interpreter: StyleInterpreter, targets: torch.Tensor):
    """`fit`'s batches (each member its own shuffle), epoch after epoch, forever."""
    cfg = interpreter.config
    shufflers = [_member_generator(cfg.seed, m, _SHUFFLE) for m in range(cfg.members)]
    while True:
        yield from interpreter._batches(shufflers, len(labelled(interpreter, targets)))


def train_speed(s: dict, workdir: str, threads: int, images: int, batches: int) -> dict:
    """Median batch time of each training path, the paths interleaved batch by batch so that
    the background load hits them alike."""
    generator = start(s, threads)
    pyramid = load_pyramid(Path(workdir), torch.float32, images)
    masks = load_masks(Path(workdir), images)
    steps = {}
    for dtype in ("float32", "float16"):
        stored = [level.to(getattr(torch, dtype)) for level in pyramid]
        steps[f"ours_{dtype}"] = ours_trainer(new_interpreter(s, generator), stored, masks)
    table = materialise(pyramid, s["resolution"]).float()  # one copy suffices for speed
    steps["naive"] = naive_trainer(new_interpreter(s, generator), table, masks.flatten().long())
    times: dict[str, list[float]] = {name: [] for name in steps}
    for batch in islice(batch_order(new_interpreter(s, generator), masks.flatten().long()), batches):
        for name, step in steps.items():
            times[name].append(_seconds(step, batch))
    return {f"{name}_batch_s": statistics.median(t) for name, t in times.items()}


def label_one(predict, pyramid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What labelling one image costs: all members' probabilities, then vote and uncertainty."""
    probs = predict(pyramid)
    return probs, vote(probs), mutual_information(probs)


def infer(s: dict, workdir: str, threads: int, naive: bool, repeats: int) -> dict:
    start(s, threads)
    interpreter = StyleInterpreter.load(Path(workdir) / "interpreter", "cpu")
    one = load_pyramid(Path(workdir), torch.float32, 1)
    predict = partial(predict_probs_naive, interpreter) if naive else interpreter.predict_probs
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        probs, labels, _ = label_one(predict, one)
        times.append(time.perf_counter() - begin)
    result = {"seconds": min(times), "times": times, "memory": _measure.memory()}
    if naive:  # after the memory reading: the check is not part of the measurement
        ours, ours_labels, _ = label_one(interpreter.predict_probs, one)
        result["max_abs_diff"] = (ours - probs).abs().max().item()
        result["vote_agreement"] = (ours_labels == labels).float().mean().item()
    return result


def throughput(s: dict, workdir: str, threads: int, repeats: int) -> dict:
    generator = start(s, threads)
    interpreter = StyleInterpreter.load(Path(workdir) / "interpreter", "cpu")
    ws = generator.ws_from_seeds(range(10_000, 10_000 + THROUGHPUT_BATCH))
    label_ws(generator, interpreter, ws[:1])  # warm-up: allocator, oneDNN kernels
    plain, labelled = [], []
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        plain.append(_seconds(generator.synthesize, ws))
        labelled.append(_seconds(label_ws, generator, interpreter, ws))
    return {"generator_per_s": len(ws) / min(plain), "labelled_per_s": len(ws) / min(labelled)}


def _seconds(work, *args) -> float:
    begin = time.perf_counter()
    work(*args)
    return time.perf_counter() - begin


CHILDREN = {f.__name__: f for f in (prep, train_ours, train_naive, train_speed, infer, throughput)}


# ---- parent side: orchestration ----


def child(name: str, setting: Setting, **kwargs) -> dict:
    print(f"  {name} {kwargs}", flush=True)
    begin = time.perf_counter()
    result = _measure.run_in_child(__file__, name, s=asdict(setting), **kwargs)
    print(f"    {time.perf_counter() - begin:.0f} s: {_brief(result)}", flush=True)
    return result


def _brief(result: dict) -> str:
    flat = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    if "memory" in result:
        flat["above_mib"] = result["memory"]["above_mib"]
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items())


def run_setting(setting: Setting, threads: int, workdir: Path) -> dict:
    print(f"\n## {setting.name}", flush=True)
    common = {"workdir": str(workdir), "threads": threads}
    out = {"prep": child("prep", setting, **common)}
    for dtype in ("float32", "float16"):
        out[f"ours_{dtype}"] = child("train_ours", setting, dtype=dtype, batches=setting.memory_batches,
                                     save=dtype == "float32", **common)
    out["naive"] = {n: child("train_naive", setting, images=n, batches=setting.memory_batches, **common)
                    for n in setting.naive_images}
    out["speed"] = child("train_speed", setting, images=max(setting.naive_images), batches=setting.batches,
                         **common)
    out["infer_ours"] = child("infer", setting, naive=False, repeats=setting.infer_repeats, **common)
    out["infer_naive"] = child("infer", setting, naive=True, repeats=setting.infer_repeats, **common)
    out["throughput"] = child("throughput", setting, repeats=setting.throughput_repeats, **common)
    return out


def naive_at(naive: dict, images: int, key) -> tuple[float, bool]:
    """A naive quantity at `images` annotated images: measured, or linear through n=1 and n=2."""
    if images in naive:
        return key(naive[images]), False
    a, b = key(naive[1]), key(naive[2])
    return a + (images - 1) * (b - a), True


# ---- parent side: report ----


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def row(measurement: str, ours: str, naive: str = "", ratio: str = "", target: str = "", ok=None) -> list[str]:
    return [measurement, ours, naive, ratio, target, "" if ok is None else verdict(ok)]


def rows_for(setting: Setting, r: dict) -> list[list[str]]:
    return memory_rows(setting, r) + training_rows(setting, r) + inference_rows(r) + [throughput_row(r)]


def memory_rows(setting: Setting, r: dict) -> list[list[str]]:
    naive = r["naive"]
    above, extrapolated = naive_at(naive, setting.images, lambda x: x["memory"]["above_mib"])
    absolute = naive[max(naive)]["memory"]["baseline_mib"] + above
    star = "*" if extrapolated else ""
    rows = []
    for dtype in ("float32", "float16"):
        ours = r[f"ours_{dtype}"]["memory"]
        ratio = above / ours["above_mib"]
        rows.append(row(f"training peak RSS above baseline, pyramid {dtype} (MiB)", f"{ours['above_mib']:.0f}",
                        f"{above:.0f}{star}", f"{ratio:.1f}x lower", f">= {TARGETS['memory']:.0f}x lower",
                        ratio >= TARGETS["memory"]))
        rows.append(row(f"training peak RSS absolute, pyramid {dtype} (MiB)", f"{ours['peak_mib']:.0f}",
                        f"{absolute:.0f}{star}", f"{absolute / ours['peak_mib']:.1f}x lower"))
    return rows


def training_rows(setting: Setting, r: dict) -> list[list[str]]:
    speed, k = r["speed"], setting.batches
    ours, fp16, naive = (speed[f"{name}_batch_s"] for name in ("ours_float32", "ours_float16", "naive"))
    per_epoch = setting.images * setting.resolution**2 / PIXELS_PER_BATCH
    build, extrapolated = naive_at(r["naive"], setting.images, lambda x: x["setup_s"])
    return [
        row(f"training, {k} batches x 64 px x 10 members (s; ours with the fp16 pyramid: {fp16 * k:.1f})",
            f"{ours * k:.1f}", f"{naive * k:.1f}", f"{naive / ours:.2f}x"),
        row(f"training, one epoch of {setting.images} images = {per_epoch:.0f} batches, with set-up / "
            "table build (s, est.)", f"{r['ours_float32']['setup_s'] + ours * per_epoch:.0f}",
            f"{build + naive * per_epoch:.0f}" + ("*" if extrapolated else "")),
    ]


def inference_rows(r: dict) -> list[list[str]]:
    ours, naive = r["infer_ours"], r["infer_naive"]
    speed_up, diff = naive["seconds"] / ours["seconds"], naive["max_abs_diff"]
    return [
        row("inference, label one image: probs + vote + uncertainty (s)", f"{ours['seconds']:.3f}",
            f"{naive['seconds']:.3f}", f"{speed_up:.1f}x faster", f">= {TARGETS['inference']:.0f}x faster",
            speed_up >= TARGETS["inference"]),
        row("inference peak RSS above baseline (MiB)", f"{ours['memory']['above_mib']:.0f}",
            f"{naive['memory']['above_mib']:.0f}"),
        row(f"inference max abs difference of probabilities (vote agreement {naive['vote_agreement']:.4%})",
            f"{diff:.1e}", target="<= 1e-5", ok=diff <= 1e-5),
    ]


def throughput_row(r: dict) -> list[str]:
    t = r["throughput"]
    ratio = t["labelled_per_s"] / t["generator_per_s"]
    return row("labelled samples/s (label_ws) vs generator samples/s, batch 8", f"{t['labelled_per_s']:.2f}",
               f"{t['generator_per_s']:.2f} (generator)", f"{ratio:.2f}x", f">= {TARGETS['throughput']}x",
               ratio >= TARGETS["throughput"])


def notes_for(setting: Setting, r: dict) -> list[str]:
    naive, prep = r["naive"], r["prep"]
    lines = [(f"{setting.name}: D = {prep['feature_dim']}, native pyramid of {setting.images} images "
              f"{prep['pyramid_mib']:.0f} MiB fp32; its synthesis (shared by both sides, outside both "
              f"measurements) peaks at {prep['memory']['above_mib']:.0f} MiB above baseline")]
    memory = r["ours_float32"]["memory"]
    lines.append(f"{setting.name}: baseline = after imports + generator build ({memory['imports_and_generator_mib']:.0f} "
                 f"MiB) + a tiny warm-up ({memory['baseline_mib'] - memory['imports_and_generator_mib']:.0f} MiB more)")
    measured = ", ".join(f"n={k}: {v['memory']['above_mib']:.0f} MiB (table {v['table_mib']:.0f})" for k, v in naive.items())
    lines.append(f"{setting.name}: naive peak above baseline measured at {measured}")
    if setting.images not in naive:
        lines.append(f"{setting.name}: * naive at {setting.images} images extrapolated linearly from n=1 and n=2")
    elif 1 in naive and 2 in naive:
        guess, _ = naive_at({1: naive[1], 2: naive[2]}, setting.images, lambda x: x["memory"]["above_mib"])
        real = naive[setting.images]["memory"]["above_mib"]
        lines.append(f"{setting.name}: check of the extrapolation: from n=1,2 it predicts {guess:.0f} MiB at "
                     f"n={setting.images}, measured {real:.0f} ({guess / real - 1:+.0%})")
    lines.append(f"{setting.name}: training batch times measured on {max(naive)} annotated image(s), "
                 f"all three paths in one process")
    return lines


def markdown(rows: list[list[str]]) -> str:
    header = ["setting", "measurement", "ours", "naive", "ratio", "target", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 px, 4 images, 100 batches: a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in every child")
    args = parser.parse_args()
    settings = QUICK if args.quick else SETTINGS
    command = "python bench/interpreter.py" + (" --quick" if args.quick else "") + (
        f" --threads {args.threads}" if args.threads != 1 else "")
    began, load_before = time.perf_counter(), load_average()
    print(f"{command}\ntorch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, "
          f"load average {load_before}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_interpreter_") as tmp:
        for setting in settings:
            workdir = Path(tmp) / setting.name.split()[0]
            workdir.mkdir()
            results[setting.name] = run_setting(setting, args.threads, workdir)
    rows, notes = [], []
    for setting in settings:
        rows += [[setting.name] + row for row in rows_for(setting, results[setting.name])]
        notes += notes_for(setting, results[setting.name])
    print(f"\n## Results ({time.perf_counter() - began:.0f} s; load average {load_before} at start, "
          f"{load_average()} at the end, on {os.cpu_count()} CPUs, {args.threads} torch thread(s))\n")
    print(markdown(rows))
    print()
    for line in notes:
        print(f"- {line}")
    print("- naive = the paper's design: fp16 + fp32 copies of the [N*S*S, D] hypercolumn table (as the official "
          "code keeps them); its batches read the fp32 rows; ensemble, batch order and Adam are the same as ours")
    print("- training times: median batch time x batch count, the paths interleaved batch by batch in one process; "
          "inference and throughput: best of the repeats; the machine was shared (see the load averages)")
    print(f"\nCommand: `{command}`")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _measure.child_main(CHILDREN, sys.argv[2:])
    else:
        main()
