"""StyleGAN3 as a user meets it: an NVIDIA pickle read without running its code, our file format,
`generator info`, and the whole workflow (sample, annotate, train, generate) at tiny size."""

import json

import torch

import fixture_builders as fb
from conftest import TINY_INTERPRETER, brightness_mask, load_reference, state_under
from datasetgan.formats.dataset import read_manifest
from datasetgan.formats.masks import save_mask
from datasetgan.generators.checkpoint import save_generator
from datasetgan.generators.loaders import convert, detect_format, load_network_file
from datasetgan.generators.registry import describe
from datasetgan.generators.stylegan3 import StyleGAN3Generator
from datasetgan.workspace import Workspace
from test_cli import run
from test_stylegan3 import FIXTURE, TOL, max_error, tiny_network


def test_nvidia_stylegan3_pickle_loads_to_nvidias_outputs(tmp_path):
    t, meta = load_reference(FIXTURE)
    init_kwargs = json.loads(meta["init_kwargs"])
    network = StyleGAN3Generator(**init_kwargs)
    network.load_state_dict(state_under(t, "G_ema."))
    sentinel = tmp_path / "sentinel"
    pickled = fb.dump_nvidia_pickle(fb.nvidia_snapshot(fb.stylegan3_tree(network)), tmp_path / "stylegan3-t.pkl",
                                    fb.sentinel_source(sentinel), protocol=4)
    assert detect_format(pickled) == "nvidia-pickle"
    loaded = load_network_file(pickled)
    assert not sentinel.exists(), "the pickled source was executed"
    assert isinstance(loaded, StyleGAN3Generator) and loaded.init_kwargs == init_kwargs
    with torch.no_grad():
        for psi in ("100", "070"):
            assert max_error(loaded.mapping(t["z"], None, truncation_psi=int(psi) / 100), t[f"psi{psi}.ws"]) < TOL
            assert max_error(loaded.synthesis(t[f"psi{psi}.ws"]), t[f"psi{psi}.img"]) < TOL
    converted = convert(pickled, tmp_path / "sg3.safetensors")
    again = load_network_file(tmp_path / "sg3.safetensors")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in converted.state_dict().items())
    info = describe(again)
    assert info["architecture"].startswith("StyleGAN3") and info["num_ws"] == 16
    assert info["feature_layers"][0] == {"name": "L0_36_128", "channels": 128, "resolution": 16}
    assert info["feature_dim"] == sum(layer["channels"] for layer in info["feature_layers"])


def test_conditional_stylegan3_pickle_keeps_its_classes(tmp_path):
    network = tiny_network(c_dim=3)
    pickled = fb.dump_nvidia_pickle(fb.nvidia_snapshot(fb.stylegan3_tree(network), resolution=32),
                                    tmp_path / "conditional.pkl", fb.sentinel_source(tmp_path / "sentinel"), 4)
    loaded = load_network_file(pickled)
    assert loaded.c_dim == 3 and "mapping.embed.weight" in loaded.state_dict()
    z, c = torch.randn(2, 16), torch.eye(3)[[0, 2]]
    with torch.no_grad():
        assert torch.equal(loaded(z, c), network(z, c))


def test_stylegan3_workflow_samples_trains_and_generates(tmp_path):
    save_generator(tiny_network(), tmp_path / "sg3.safetensors")
    root = tmp_path / "ws"
    assert run("init", str(root), "--generator", str(tmp_path / "sg3.safetensors"),
               "--classes", "background,bright,dark").returncode == 0
    assert run("sample", str(root), "-n", "3", "--device", "cpu").returncode == 0
    workspace = Workspace.open(root)
    workspace.config.interpreter = TINY_INTERPRETER
    workspace.save_config()
    for cid in workspace.candidate_ids():
        save_mask(workspace.annotation_path(cid), brightness_mask(workspace.candidate_image(cid)),
                  [c.color for c in workspace.label_classes])
    trained = run("train", str(root), "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["feature_resolution"] == 32
    made = run("generate", str(root), "-n", "4", "--batch-size", "2", "--device", "cpu")
    assert made.returncode == 0, made.stderr
    records = read_manifest(root / "datasets" / "synthetic", kept_only=False)
    assert len(records) == 4 and all((root / "datasets" / "synthetic" / "masks" / f"{r['name']}.png").is_file()
                                     for r in records)
    info = run("generator", "info", str(tmp_path / "sg3.safetensors"))
    assert info.returncode == 0 and json.loads(info.stdout)["architecture"].startswith("StyleGAN3")
