"""Annotation effort: the actions a scripted person needs in the studio, with and without its assists.

    python bench/annotation_effort.py                          # 8 candidates, both runs: ~1.5 min on 2 CPUs
    python bench/annotation_effort.py --candidates 2 --brush 5 --max-actions 100 --no-headless   # watch it

Set-up. A workspace on builtin:faces64 with the faces world's classes and `--candidates` fresh
candidates (seeds from `--first-seed`). Each candidate's target is the world oracle's mask of its
image (`load_oracle` + `predict`, the maths of `annotate_candidates`, which paints the experiments'
candidates; here the masks are kept as targets instead of being saved as annotations). A copy of
the workspace gets a part model (`discover`: `--k` clusters, `--samples` generated images, seed
0) for the assisted run. Each run opens every candidate with an empty (all background) mask in
Chromium and works only through the studio's UI: class keys 1...9 0, tool keys B F W, brush size
and wand similarity set with [ and ], the Parts layer toggled with A, Z to fit the view, clicks at
pixel centres, Ctrl+S to save at the end (the saved file must equal the page's mask).

The policy, identical for both runs (only the set of actions differs). Repeat:
1. read the mask from the page (`studio.mask()`); stop once it agrees with the target on
   `--target` of the pixels;
2. spots: the 4-connected regions where mask != target (scipy.ndimage.label), largest first
   (equal sizes: in label order, i.e. row-major by first pixel); within a region its pixels by
   decreasing Euclidean distance to the outside (distance_transform_edt, the image border counts
   as outside; ties in row-major order). The first spot is the largest region's most interior pixel;
3. at a spot, with the target's class there, every action the run has is simulated on a copy of
   the mask with the studio's own maths:
     brush  one click-dab of the fixed odd `--brush` size centred on the pixel (app.js stampBrush)
     fill   flood fill of the 4-connected region of the pixel's current class (app.js floodFill)
     wand   assisted: the region the server's wand route returns for that click at `--threshold`
     parts  assisted: the pixel's whole part cluster (the server's clusters route)
   the one leaving the most pixels in agreement is the spot's action (ties: in the order above);
4. take the first spot whose action strictly raises the agreement: pick its class and tool with
   their keys, click the pixel, count one action; the page's mask must then equal the simulation
   pixel for pixel (else the script stops with an error).
Step 4 only goes past the first spot when nothing there helps: at 1-pixel structures a 3-pixel dab
can spoil as many pixels as it fixes, and the literal "act at the most interior pixel" then cycles
forever. A candidate also stops at `--max-actions` ("cap") or when no spot has an improving action
("stuck"); either is marked in the table.

Counted: painting clicks, one per action. Not counted: key presses (class, tool, A before and after
a parts click), fitting the view, saving. Wall time: from the candidate's opening until the target
is reached, the policy's simulation (and its wand queries) included.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from scipy import ndimage
from threadpoolctl import threadpool_limits

from datasetgan.annotate.server import serve_in_background
from datasetgan.discovery import discover
from datasetgan.formats.masks import load_mask
from datasetgan.pipeline import Pipeline
from datasetgan.segment.data import read_image
from datasetgan.segment.train import predict
from datasetgan.workspace import Workspace
from datasetgan.worlds import parse_classes
from datasetgan.worlds.oracle import load_oracle

GENERATOR = "builtin:faces64"
PLAIN = ("brush", "fill")
ASSISTED = ("brush", "fill", "wand", "parts")
CLASS_KEYS = "1234567890"  # app.js: class i is picked with CLASS_KEYS[i]
TOOL_KEYS = {"brush": "b", "fill": "f", "wand": "w"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 120_000


@dataclass
class Outcome:
    """One candidate annotated in one run."""

    used: Counter[str] = field(default_factory=Counter)  # actions by kind
    agreement: float = 0.0
    seconds: float = 0.0
    ending: str = "reached"  # reached | cap | stuck

    @property
    def actions(self) -> int:
        return sum(self.used.values())


@dataclass(eq=False)
class Step:
    """The policy's next action and the mask it must leave."""

    kind: str
    y: int
    x: int
    label: int
    result: np.ndarray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=8, help="fresh candidates to annotate")
    parser.add_argument("--first-seed", type=int, default=3000, help="their seeds: first-seed, first-seed + 1, ...")
    parser.add_argument("--k", type=int, default=32, help="part clusters of the assisted run's part model")
    parser.add_argument("--samples", type=int, default=200, help="generated images the part model is fitted on")
    parser.add_argument("--threshold", type=float, default=0.8, help="the wand's similarity (whole hundredths)")
    parser.add_argument("--brush", type=odd_brush, default=3, help="brush size in pixels (odd, 1-31)")
    parser.add_argument("--target", type=float, default=0.9, help="pixel agreement with the oracle's mask to reach")
    parser.add_argument("--max-actions", type=int, default=300, help="cap per candidate and run")
    parser.add_argument("--threads", type=int, default=1, help="torch and k-means threads")
    parser.add_argument("--headless", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, load = time.monotonic(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        plain, assisted, targets = prepare(Path(tmp), args)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=args.headless, args=CHROMIUM_ARGS)
        results = {"without": run("without", plain, targets, PLAIN, args, browser),
                   "with": run("with", assisted, targets, ASSISTED, args, browser)}
        browser.close()
    report(args, targets, results, time.monotonic() - started, load)


def odd_brush(text: str) -> int:
    size = int(text)
    if size % 2 == 0 or not 1 <= size <= 31:
        raise argparse.ArgumentTypeError("give an odd size from 1 to 31 (a dab centred on the clicked pixel)")
    return size


# ---- set-up ------------------------------------------------------------------------------


def prepare(root: Path, args: argparse.Namespace) -> tuple[Workspace, Workspace, dict[str, np.ndarray]]:
    """The plain run's workspace, the assisted run's copy with a part model, and the targets by id."""
    seeds = range(args.first_seed, args.first_seed + args.candidates)
    plain = Workspace.init(root / "without", GENERATOR, parse_classes("world:faces"))
    pipeline = Pipeline(plain, "cpu")
    ids = pipeline.sample(seeds)
    targets = oracle_masks(plain, ids)
    print(f"{len(ids)} candidates (seeds {seeds[0]}-{seeds[-1]}), the oracle's masks as targets", flush=True)
    shutil.copytree(plain.root, root / "with")
    assisted = Workspace.open(root / "with")
    clock = time.monotonic()
    with threadpool_limits(args.threads):
        model = discover(Pipeline(assisted, "cpu"), args.k, samples=args.samples, seed=0, progress=False)
    model.save(assisted.parts_dir)
    print(f"part model: k={args.k} from {args.samples} samples in {time.monotonic() - clock:.0f} s", flush=True)
    return plain, assisted, targets


def oracle_masks(workspace: Workspace, ids: list[str]) -> dict[str, np.ndarray]:
    device = torch.device("cpu")
    images = torch.from_numpy(np.stack([read_image(workspace.candidate_image(c)) for c in ids])).permute(0, 3, 1, 2)
    masks = predict(load_oracle("faces", images.shape[-1], device), images, device)
    return {cid: mask.numpy() for cid, mask in zip(ids, masks)}


# ---- the studio, driven as a person would ------------------------------------------------------


class Studio:
    """One page of the studio: keys and clicks at image pixels; it fails on any script error."""

    def __init__(self, page: Page, url: str):
        self.page, self.errors = page, []
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)
        page.goto(url)
        page.wait_for_selector("#stage[data-candidate]", state="attached")
        self.label: int | None = None  # what this script last picked (the page starts on class 1, brush)
        self.tool: str | None = None
        self.origin, self.zoom, self.shape = (0.0, 0.0), 1.0, (0, 0)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:  # a new mask is a 404
            self.errors.append(message.text)

    def set_brush(self, size: int) -> None:
        self.pick_tool("brush")
        self._nudge_to("#size-value", int(self.page.inner_text("#size-value")), size, str(size))

    def set_threshold(self, threshold: float) -> None:
        self.pick_tool("wand")  # with the wand picked, [ and ] move its threshold by 0.01
        shown = round(100 * float(self.page.inner_text("#threshold-value")))
        self._nudge_to("#threshold-value", shown, round(100 * threshold), f"{threshold:.2f}")

    def _nudge_to(self, selector: str, current: int, wanted: int, text: str) -> None:
        for _ in range(abs(wanted - current)):
            self.page.keyboard.press("]" if wanted > current else "[")
        if self.page.inner_text(selector) != text:
            raise RuntimeError(f"{selector} shows {self.page.inner_text(selector)}, not {text}")

    def open(self, cid: str, shape: tuple[int, int]) -> None:
        """Open a candidate from the image list (a new, all-background mask) and fit the view (Z)."""
        if self.page.get_attribute("#stage", "data-candidate") != cid:
            self.page.click(f'#image-list li[data-id="{cid}"]')
        self.page.wait_for_selector(f'#stage[data-candidate="{cid}"][data-source="new"]', state="attached")
        self.page.keyboard.press("z")
        box = self.page.locator("#stage").bounding_box()
        self.origin, self.zoom, self.shape = (box["x"], box["y"]), box["width"] / shape[1], shape

    def mask(self) -> np.ndarray:
        return np.array(self.page.evaluate("studio.mask()"), np.uint8).reshape(self.shape)

    def pick_label(self, label: int) -> None:
        if label != self.label:
            self.page.keyboard.press(CLASS_KEYS[label])
            self.label = label

    def pick_tool(self, tool: str) -> None:
        if tool != self.tool:
            self.page.keyboard.press(TOOL_KEYS[tool])
            self.tool = tool

    def act(self, step: Step, cid: str) -> None:
        """One painting click; a part is clicked with the Parts layer on (A), which is then turned off."""
        self.pick_label(step.label)
        if step.kind == "parts":
            self.page.keyboard.press("a")
            self.page.wait_for_selector(f'#stage[data-parts="{cid}"]', state="attached")  # the map has arrived
            self.click(step.y, step.x)
            self.page.keyboard.press("a")
        else:
            self.pick_tool(step.kind)
            self.click(step.y, step.x)
        self.page.wait_for_selector("#viewport:not(.busy)", state="attached")  # the wand's region is painted

    def click(self, y: int, x: int) -> None:
        self.page.mouse.click(self.origin[0] + (x + 0.5) * self.zoom, self.origin[1] + (y + 0.5) * self.zoom)

    def save(self) -> None:
        self.page.keyboard.press("Control+s")
        self.page.wait_for_selector('body[data-save="saved"]', state="attached")

    def check(self) -> None:
        if self.errors:
            raise RuntimeError(f"the studio reported errors: {self.errors}")


# ---- the policy ----------------------------------------------------------------------------


class Tools:
    """The actions a run has on one candidate, simulated with the studio's maths."""

    def __init__(self, kinds: tuple[str, ...], url: str, cid: str, brush: int, threshold: float):
        self.kinds, self.url, self.cid, self.brush, self.threshold = kinds, url, cid, brush, threshold
        self.clusters = fetch_clusters(url, cid) if "parts" in kinds else None

    def outcome(self, kind: str, mask: np.ndarray, y: int, x: int, label: int) -> np.ndarray:
        painted = mask.copy()
        painted[self.where(kind, mask, y, x)] = label
        return painted

    def where(self, kind: str, mask: np.ndarray, y: int, x: int) -> np.ndarray:
        """bool `[H, W]`: the pixels the action at (y, x) paints."""
        if kind == "brush":  # stampBrush: pixel centres within size/2 of the dab's centre (x + 0.5, y + 0.5)
            rows, columns = np.indices(mask.shape)
            return (columns - x) ** 2 + (rows - y) ** 2 <= (self.brush / 2) ** 2
        if kind == "fill":  # floodFill: the 4-connected region of the clicked pixel's class
            regions, _ = ndimage.label(mask == mask[y, x])
            return regions == regions[y, x]
        if kind == "wand":
            return fetch_wand(self.url, self.cid, y, x, self.threshold).reshape(mask.shape)
        return self.clusters == self.clusters[y, x]


def fetch_wand(url: str, cid: str, y: int, x: int, threshold: float) -> np.ndarray:
    """The server's wand region for a click, as the page asks for it (x, y, the threshold it shows)."""
    body = json.dumps({"x": x, "y": y, "threshold": round(100 * threshold) / 100}).encode()
    request = urllib.request.Request(f"{url}api/candidates/{cid}/wand", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return np.frombuffer(response.read(), np.uint8) == 1


def fetch_clusters(url: str, cid: str) -> np.ndarray:
    with urllib.request.urlopen(f"{url}api/candidates/{cid}/clusters") as response:
        height, width = int(response.headers["X-Mask-Height"]), int(response.headers["X-Mask-Width"])
        return np.frombuffer(response.read(), "<u2").reshape(height, width)


def spots(disagreement: np.ndarray) -> Iterator[tuple[int, int]]:
    """Pixels to act at: regions of disagreement largest first, each's pixels most interior first."""
    regions, count = ndimage.label(disagreement)  # 4-connected
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    for region in np.argsort(-sizes, kind="stable") + 1:
        inside = regions == region
        depth = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]  # the border counts as outside
        for flat in np.argsort(-depth, axis=None, kind="stable")[: np.count_nonzero(inside)]:
            yield divmod(int(flat), disagreement.shape[1])


def choose(mask: np.ndarray, target: np.ndarray, tools: Tools) -> Step | None:
    """The first spot's best action that raises the agreement; None if no spot has one."""
    agreeing = np.count_nonzero(mask == target)
    for y, x in spots(mask != target):
        label = int(target[y, x])
        outcomes = {kind: tools.outcome(kind, mask, y, x, label) for kind in tools.kinds}
        kind = max(outcomes, key=lambda k: np.count_nonzero(outcomes[k] == target))  # the first of equals
        if np.count_nonzero(outcomes[kind] == target) > agreeing:
            return Step(kind, y, x, label, outcomes[kind])
    return None


def annotate(studio: Studio, tools: Tools, target: np.ndarray, args: argparse.Namespace) -> Outcome:
    """The policy on the open candidate until the target agreement, the cap, or no improving action."""
    outcome, started = Outcome(), time.monotonic()
    mask = studio.mask()
    while np.mean(mask == target) < args.target:
        if outcome.actions == args.max_actions:
            outcome.ending = "cap"
            break
        step = choose(mask, target, tools)
        if step is None:
            outcome.ending = "stuck"
            break
        studio.act(step, tools.cid)
        outcome.used[step.kind] += 1
        mask = studio.mask()
        if not np.array_equal(mask, step.result):
            raise RuntimeError(f"{tools.cid}: the studio's {step.kind} at (x={step.x}, y={step.y}) left "
                               f"{np.count_nonzero(mask != step.result)} pixels unlike the simulation")
    outcome.seconds, outcome.agreement = time.monotonic() - started, float(np.mean(mask == target))
    return outcome


def run(name: str, workspace: Workspace, targets: dict[str, np.ndarray], kinds: tuple[str, ...],
        args: argparse.Namespace, browser: Browser) -> dict[str, Outcome]:
    """One run over every candidate in a fresh page of its own studio; each annotation saved and checked."""
    print(f"\nrun {name} assists: actions {', '.join(kinds)}", flush=True)
    outcomes = {}
    with serve_in_background(workspace) as url:
        page = browser.new_page(viewport=VIEWPORT)
        studio = Studio(page, url)
        if "wand" in kinds:
            studio.set_threshold(args.threshold)
        studio.set_brush(args.brush)
        for cid, target in targets.items():
            studio.open(cid, target.shape)
            outcome = annotate(studio, Tools(kinds, url, cid, args.brush, args.threshold), target, args)
            final = studio.mask()
            studio.save()
            if not np.array_equal(load_mask(workspace.annotation_path(cid)), final):
                raise RuntimeError(f"{cid}: the saved annotation differs from the page's mask")
            studio.check()
            outcomes[cid] = outcome
            note = "" if outcome.ending == "reached" else f"  ({outcome.ending})"
            print(f"  {cid}: {outcome.actions} actions ({mix(outcome.used, kinds)}), agreement "
                  f"{100 * outcome.agreement:.1f} %, {outcome.seconds:.1f} s{note}", flush=True)
        page.close()
    return outcomes


# ---- report ------------------------------------------------------------------------------


def mix(used: Counter, kinds: tuple[str, ...]) -> str:
    return " / ".join(str(used[k]) for k in kinds)


def count(outcome: Outcome) -> str:
    return str(outcome.actions) if outcome.ending == "reached" else f"{outcome.actions} ({outcome.ending})"


def report(args: argparse.Namespace, targets: dict[str, np.ndarray], results: dict[str, dict[str, Outcome]],
           seconds: float, load: tuple[float, ...]) -> None:
    plain, assisted = results["without"], results["with"]
    seeds = f"{args.first_seed}-{args.first_seed + args.candidates - 1}"
    print(f"\n### Results ({seconds / 60:.1f} min; load average {load[0]:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at the end, {os.cpu_count()} CPUs, {args.threads} torch thread(s))\n")
    print(f"{GENERATOR}, world:faces classes, {len(targets)} fresh candidates (seeds {seeds}); target: "
          f"{100 * args.target:g} % pixel agreement with the world oracle's mask, from an empty mask; "
          f"brush {args.brush} px (one dab), fill; assists: wand at similarity {args.threshold:.2f}, "
          f"auto-parts k={args.k} (discover: {args.samples} samples, seed 0); cap {args.max_actions} actions.\n")
    print("| candidate | actions without assists | actions with assists | ratio | agreement % without / with | "
          "seconds without / with | without: brush / fill | with: brush / fill / wand / parts |")
    print("|---|---|---|---|---|---|---|---|")
    for cid in targets:
        a, b = plain[cid], assisted[cid]
        print(f"| {cid} | {count(a)} | {count(b)} | {a.actions / b.actions:.1f}x | "
              f"{100 * a.agreement:.1f} / {100 * b.agreement:.1f} | {a.seconds:.1f} / {b.seconds:.1f} | "
              f"{mix(a.used, PLAIN)} | {mix(b.used, ASSISTED)} |")
    totals = [sum(r.actions for r in runs.values()) for runs in (plain, assisted)]
    used = [sum((r.used for r in runs.values()), Counter()) for runs in (plain, assisted)]
    taken = [sum(r.seconds for r in runs.values()) for runs in (plain, assisted)]
    print(f"| **total** | {totals[0]} | {totals[1]} | **{totals[0] / totals[1]:.1f}x** | | "
          f"{taken[0]:.0f} / {taken[1]:.0f} | {mix(used[0], PLAIN)} | {mix(used[1], ASSISTED)} |")
    print(f"| mean | {totals[0] / len(targets):.1f} | {totals[1] / len(targets):.1f} | | | | | |")
    short = [f"{cid} {name} ({runs[cid].ending})" for name, runs in results.items() for cid in targets
             if runs[cid].ending != "reached"]
    print(f"\nDid not reach the target: {', '.join(short) if short else 'none'}.")
    print(f"\nCommand: `{shlex.join(['python', 'bench/annotation_effort.py', *sys.argv[1:]])}`")


if __name__ == "__main__":
    main()
