"""Class-conditional StyleGAN2 (`c_dim > 0`, `mapping.embed`): NVIDIA's outputs, our pickle
loader, the generator interface's class per seed, and the one-line errors of bad classes."""

import json

import pytest
import torch
from safetensors import safe_open

import fixture_builders as fb
from conftest import TINY_INTERPRETER, brightness_mask, load_reference, state_under
from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import read_manifest
from datasetgan.formats.masks import save_mask
from datasetgan.generators.checkpoint import save_generator
from datasetgan.generators.base import zs_from_seeds
from datasetgan.generators.loaders import load_network_file
from datasetgan.generators.registry import describe
from datasetgan.generators.stylegan2_generator import StyleGAN2
from datasetgan.pipeline import Pipeline
from datasetgan.workspace import Workspace
from test_cli import run
from test_stylegan2 import TOL, close, tiny_network

FIXTURE = "stylegan2_conditional_reference_32.safetensors"
GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")


@pytest.fixture(scope="module")
def reference():
    """The fixture's G_ema and init kwargs (the stylegan3 repository's flattened form, nested here)."""
    tensors, meta = load_reference(FIXTURE)
    flat = json.loads(meta["init_kwargs"])
    init = {k: flat[k] for k in GENERATOR_ARGS}
    init["synthesis_kwargs"] = {k: v for k, v in flat.items() if k not in GENERATOR_ARGS}
    return state_under(tensors, "G_ema."), init, tensors


@pytest.fixture
def loaded(tmp_path, reference):
    """The fixture's network through an NVIDIA pickle in the stylegan3 repository's layout."""
    state, init, _ = reference
    sentinel = tmp_path / "sentinel"
    tree = fb.generator_tree(state, init, "sg3")
    path = fb.dump_nvidia_pickle(fb.nvidia_snapshot(tree, resolution=32), tmp_path / "conditional.pkl",
                                 fb.sentinel_source(sentinel), 4)
    network = load_network_file(path)
    assert not sentinel.exists()
    return network


def test_conditional_pickle_matches_nvidia(loaded, reference):
    _, _, t = reference
    assert loaded.c_dim == 3 and describe(loaded)["c_dim"] == 3
    with torch.no_grad():
        for psi in ("100", "070"):
            ws = loaded.mapping(t["z"], t["c"], truncation_psi=int(psi) / 100)
            assert close(ws, t[f"psi{psi}.ws"])
            assert close(loaded.synthesis(t[f"psi{psi}.ws"], noise_mode="const"), t[f"psi{psi}.img"])


def test_a_class_per_seed_names_nvidias_image_for_that_class(loaded):
    generator = StyleGAN2(loaded, device="cpu")
    ws = generator.ws_from_seeds([5, 5, 5], psi=0.7, class_ids=[0, 1, 2])
    images, _ = generator.synthesize(ws)
    assert all((images[i] - images[j]).abs().max() > 0.05 for i, j in ((0, 1), (0, 2), (1, 2)))
    z = zs_from_seeds([5], generator.z_dim)
    with torch.no_grad():  # NVIDIA's call for class 2: mapping(z, one_hot(2)), then synthesis
        expected = loaded.synthesis(loaded.mapping(z, torch.eye(3)[2:3], truncation_psi=0.7), noise_mode="const")
    assert close(images[2:3], expected.clamp(-1, 1), TOL)
    again = generator.ws_from_seeds([5], psi=0.7, class_ids=[2])
    assert torch.equal(again[0], ws[2])


def test_bad_classes_are_one_line_errors(loaded):
    conditional = StyleGAN2(loaded, device="cpu")
    with pytest.raises(DatasetGANError, match=r"conditional on 3 classes.*--condition") as missing:
        conditional.ws_from_seeds([1, 2])
    with pytest.raises(DatasetGANError, match=r"class 3 is out of range.*0\.\.2") as out_of_range:
        conditional.ws_from_seeds([1], class_ids=[3])
    with pytest.raises(DatasetGANError, match="unconditional.*--condition") as unexpected:
        StyleGAN2(tiny_network(), device="cpu").ws_from_seeds([1], class_ids=[0])
    assert all("\n" not in str(e.value) for e in (missing, out_of_range, unexpected))


def test_workflow_records_a_class_per_candidate_and_per_sample(tmp_path, loaded):
    """sample --condition, annotate, train, generate --condition: classes are kept and reproduced."""
    save_generator(loaded, tmp_path / "conditional.safetensors")
    root = tmp_path / "ws"
    assert run("init", str(root), "--generator", str(tmp_path / "conditional.safetensors"),
               "--classes", "background,bright,dark").returncode == 0
    grid = run("generator", "sample", str(tmp_path / "conditional.safetensors"), "--seeds", "0-3", "--condition", "1",
               "--out", str(tmp_path / "grid.png"))
    assert grid.returncode == 0, grid.stderr
    assert (tmp_path / "grid.png").is_file()
    missing = run("sample", str(root), "-n", "2")
    assert missing.returncode != 0 and "conditional on 3 classes" in missing.stderr
    assert run("sample", str(root), "-n", "2", "--condition", "2").returncode == 0
    workspace = Workspace.open(root)
    assert workspace.read_conditions() == {"000000": 2, "000001": 2}
    pipeline = Pipeline(workspace, "cpu")
    pipeline.sample([7], condition=0)
    assert workspace.read_conditions() == {"000000": 2, "000001": 2, "000007": 0}
    assert torch.equal(workspace.ws_for(["000007"]), pipeline.ws([7], condition=0))

    workspace.config.interpreter = TINY_INTERPRETER
    workspace.save_config()
    for cid in workspace.candidate_ids():
        save_mask(workspace.annotation_path(cid), brightness_mask(workspace.candidate_image(cid)),
                  [c.color for c in workspace.label_classes])
    assert run("train", str(root)).returncode == 0
    made = run("generate", str(root), "-n", "4", "--first-seed", "10", "--condition", "0,2", "--batch-size", "2")
    assert made.returncode == 0, made.stderr
    folder = root / "datasets" / "synthetic"
    records = read_manifest(folder, kept_only=False)
    assert [r["condition"] for r in records] == [0, 2, 0, 2]  # seed s draws the (s mod 2)-th class
    with safe_open(str(folder / "latents" / "0000000010.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("ws"), pipeline.generator.ws_from_seeds([10, 11], class_ids=[0, 2]))
    bad = run("generate", str(root), "-n", "2", "--name", "other", "--condition", "0,3")
    assert bad.returncode != 0 and "class 3 is out of range" in bad.stderr.strip().splitlines()[-1]
    assert not (root / "datasets" / "other").exists()  # refused before anything was written
