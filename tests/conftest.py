"""Shared fixtures: a tiny random StyleGAN2 and a workspace annotated by a rule on its images.

The rule (class by brightness) stands in for a person: it is a deterministic function of
the image, so an interpreter has something real to learn.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from datasetgan.formats.masks import save_mask
from datasetgan.generators.checkpoint import save_generator
from datasetgan.generators.stylegan2 import StyleGAN2Generator
from datasetgan.generators.stylegan2_generator import StyleGAN2
from datasetgan.interpreter import StyleInterpreter
from datasetgan.pipeline import Pipeline
from datasetgan.workspace import Workspace
from datasetgan.worlds import parse_classes

TINY_INTERPRETER = {"members": 3, "min_epochs": 1, "max_epochs": 2}
# Outputs of the original implementations; CI lays a copy of shared/ beside the clone
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def reference_fixture(name: str) -> Path:
    """A file of ../shared/fixtures; a missing one fails the test, so no run is green without the comparison."""
    path = SHARED_FIXTURES / name
    if not path.is_file():
        pytest.fail(f"reference fixture {path} is missing: put a copy of shared/ beside the repository", pytrace=False)
    return path


def load_reference(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A reference fixture's tensors and metadata (see `reference_fixture`)."""
    path = reference_fixture(name)
    with safe_open(str(path), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}, f.metadata()


def state_under(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The fixture's state dict stored under `prefix` (e.g. "G_ema."), without it."""
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


# A test that skips cannot fail, so a skip (pytest.skip, importorskip, a skip mark, in a test or
# at collection) is reported as a failure that keeps its reason: `make test` goes red and the
# closing line counts it, instead of a green run that tested less.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    return fail_if_skipped((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    return fail_if_skipped((yield))


def fail_if_skipped(report):
    if report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome, report.longrepr = "failed", f"skipped, and no test may skip: {reason}"
    return report


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests run tiny tensors: one thread avoids hand-off overhead and thrashing on shared CPUs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_tiny_generator(path: Path, resolution: int = 32, seed: int = 0) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = StyleGAN2Generator(
            z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3,
            mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 256, "channel_max": 32},
        )
    save_generator(network, path)
    return path


def brightness_mask(image_path: Path) -> np.ndarray:
    grey = np.asarray(Image.open(image_path).convert("L"), dtype=np.float32)
    return np.where(grey > 140, 1, np.where(grey < 110, 2, 0)).astype(np.uint8)


def make_workspace(root: Path, classes: str, n: int, interpreter: dict, resolution: int = 32) -> Workspace:
    """A workspace over a random StyleGAN2 with n candidates (seeds 0..n-1)."""
    generator = make_tiny_generator(root / "generator.safetensors", resolution)
    workspace = Workspace.init(root / "ws", str(generator), parse_classes(classes), interpreter=interpreter)
    Pipeline(workspace, "cpu").sample(range(n))
    return workspace


@pytest.fixture
def tiny_generator(tmp_path: Path) -> Path:
    return make_tiny_generator(tmp_path / "tiny.safetensors")


@pytest.fixture
def annotated_workspace(tmp_path: Path, tiny_generator: Path) -> Workspace:
    """Four candidates, each annotated by the brightness rule."""
    workspace = Workspace.init(tmp_path / "ws", str(tiny_generator), parse_classes("background,bright,dark"),
                               interpreter=TINY_INTERPRETER)
    for cid in Pipeline(workspace, "cpu").sample(range(4)):
        save_mask(workspace.annotation_path(cid), brightness_mask(workspace.candidate_image(cid)),
                  [c.color for c in workspace.label_classes])
    return workspace


@pytest.fixture
def loads(monkeypatch) -> Counter:
    """Counts, from here on, generators built and interpreters read from disk (the real ones run)."""
    counts: Counter = Counter()
    build, read = StyleGAN2.__init__, StyleInterpreter.load.__func__

    def counted_build(self, *args, **kwargs):
        counts["generator"] += 1
        build(self, *args, **kwargs)

    def counted_read(cls, *args, **kwargs):
        counts["interpreter"] += 1
        return read(cls, *args, **kwargs)

    monkeypatch.setattr(StyleGAN2, "__init__", counted_build)
    monkeypatch.setattr(StyleInterpreter, "load", classmethod(counted_read))
    return counts
