"""Bring your own generator: NVIDIA pickles, rosinality checkpoints, our safetensors.

Every foreign file here is written by the project's own test code (`fixture_builders`, whose
docstring documents the byte layouts), from state dicts: no NVIDIA or rosinality code is
used. The NVIDIA-layout pickle reproduces their persistence format, a reduce to the global
`torch_utils.persistence._reconstruct_persistent_obj` with a `meta` dict holding type,
version, `module_src`, class_name and the module's `__dict__` as state; its `module_src`
creates a sentinel file if anything executes it (NVIDIA's loader would, and
`test_fixture_source_would_run_under_a_persistence_style_loader` shows that it does).

Tolerances: images of the NVIDIA-layout pickle are compared with the reference fixture's
stored outputs of NVIDIA's code at 1e-4, as in test_stylegan2. A rosinality round trip
carries the same tensors, so weights and images are compared exactly; the check that the
name mapping means the same maths compares our network with an independent evaluation of
the rosinality state dict in rosinality's maths (`rosinality_reference_synthesis`). Those
differ only by float32 rounding of different conv routes and by where 1e-8 enters the
demodulation (rosinality scales weights by 1/sqrt(fan_in) first), both ~1e-6 at this size
(2.6e-6 measured, on images of magnitude ~7): 1e-4 is the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fixture_builders as fb
from conftest import load_reference, state_under
from datasetgan.errors import DatasetGANError
from datasetgan.generators.checkpoint import load_network, save_generator
from datasetgan.generators.loaders import convert, detect_format, estimate_w_avg, load_network_file
from datasetgan.generators.registry import describe, load_network_ref
from test_stylegan2 import FIXTURE, TOL, close, tiny_network


@pytest.fixture(scope="module")
def reference():
    tensors, meta = load_reference(FIXTURE)
    return state_under(tensors, "G_ema."), json.loads(meta["init_kwargs"]), tensors


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "sentinel"
    yield path
    assert not path.exists(), "something in the file was executed"


def tiny_pickle(path: Path, sentinel: Path, network=None, layout="ada", protocol=3, **snapshot) -> Path:
    network = network or tiny_network()
    tree = fb.generator_tree(network.state_dict(), network.init_kwargs, layout)
    return fb.dump_nvidia_pickle(fb.nvidia_snapshot(tree, resolution=16, **snapshot), path,
                                 fb.sentinel_source(sentinel), protocol)


def images(network, seed=0, psi=0.7):
    z = torch.randn(2, network.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return network.synthesis(network.mapping(z, truncation_psi=psi), noise_mode="const")


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- NVIDIA pickles ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout, protocol", [("ada", 3), ("sg3", 4)])
def test_nvidia_pickle_matches_reference(tmp_path, sentinel, reference, layout, protocol):
    state, init_kwargs, t = reference
    tree = fb.generator_tree(state, init_kwargs, layout)
    path = fb.dump_nvidia_pickle(fb.nvidia_snapshot(tree), tmp_path / "network-snapshot-000100.pkl",
                                 fb.sentinel_source(sentinel), protocol)
    assert detect_format(path) == "nvidia-pickle"
    network = load_network_file(path)
    assert all(torch.equal(network.state_dict()[k], v) for k, v in state.items())
    expected = dict(init_kwargs)
    if layout == "sg3":  # conv_clamp was left to the code's default (here: None), not pickled
        expected["synthesis_kwargs"] = {k: v for k, v in init_kwargs["synthesis_kwargs"].items() if k != "conv_clamp"}
    assert network.init_kwargs == expected
    with torch.no_grad():
        for psi in ("100", "070"):
            assert close(network.mapping(t["z"], truncation_psi=int(psi) / 100), t[f"psi{psi}.ws"])
            assert close(network.synthesis(t[f"psi{psi}.ws"], noise_mode="const"), t[f"psi{psi}.img"], TOL)


def test_fixture_source_would_run_under_a_persistence_style_loader(tmp_path, sentinel):
    """The test pickles are as dangerous as real ones: an exec-ing loader runs module_src."""
    path = tiny_pickle(tmp_path / "g.pkl", sentinel)
    fake = tmp_path / "fake_nvidia"
    (fake / "torch_utils").mkdir(parents=True)
    (fake / "dnnlib").mkdir()
    (fake / "torch_utils" / "__init__.py").write_text("")
    (fake / "torch_utils" / "persistence.py").write_text(
        "def _reconstruct_persistent_obj(meta):\n    exec(meta['module_src'], {})\n    return meta['class_name']\n"
    )
    (fake / "dnnlib" / "__init__.py").write_text("")
    (fake / "dnnlib" / "util.py").write_text("class EasyDict(dict):\n    pass\n")
    code = f"import pickle; print(pickle.load(open({str(path)!r}, 'rb'))['G_ema'])"
    env = dict(os.environ, PYTHONPATH=str(fake))
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Generator"
    assert sentinel.read_text() == "module_src was executed"
    sentinel.unlink()  # the fixture's own check: our loader must not recreate it
    load_network_file(path)


def test_takes_g_ema_not_g_and_falls_back_to_g(tmp_path, sentinel):
    g_ema, g = tiny_network(seed=0), tiny_network(seed=1)
    g_tree = fb.generator_tree(g.state_dict(), g.init_kwargs)
    path = tiny_pickle(tmp_path / "both.pkl", sentinel, network=g_ema, g=g_tree)
    assert same_weights(load_network_file(path), g_ema)
    data = fb.nvidia_snapshot(g_tree, resolution=16)
    del data["G_ema"]
    path = fb.dump_nvidia_pickle(data, tmp_path / "only_g.pkl", fb.sentinel_source(sentinel))
    assert same_weights(load_network_file(path), g)


def test_stylegan3_repo_defaults_are_read_from_the_layers(tmp_path, sentinel):
    """The stylegan3 repo's StyleGAN2 leaves conv_clamp (256 there) to its default: use what the layers recorded."""
    network = tiny_network(conv_clamp=0.5)
    path = tiny_pickle(tmp_path / "sg3.pkl", sentinel, network=network, layout="sg3", protocol=4)
    loaded = load_network_file(path)
    assert loaded.init_kwargs["synthesis_kwargs"]["conv_clamp"] == 0.5
    assert torch.equal(images(loaded), images(network))


def test_converted_tensorflow_layout_with_every_option(tmp_path, sentinel):
    network = tiny_network()
    path = tiny_pickle(tmp_path / "stylegan2-ffhq-config-f.pkl", sentinel, network=network, layout="converted",
                       protocol=4)
    loaded = load_network_file(path)
    assert loaded.init_kwargs["synthesis_kwargs"]["resample_filter"] == [1, 3, 3, 1]
    assert loaded.init_kwargs["mapping_kwargs"]["lr_multiplier"] == 0.01
    assert same_weights(loaded, network)
    assert torch.equal(images(loaded), images(network))


def test_unknown_architectures_are_refused_naming_their_class(tmp_path, sentinel):
    network = tiny_network()
    tree = fb.generator_tree(network.state_dict(), network.init_kwargs)
    synthesis = tree.state["_modules"]["synthesis"]
    stage = synthesis.state["_modules"].pop("b8")
    stage.class_name = "ProgressiveStage"
    synthesis.state["_modules"]["stage1"] = stage
    path = fb.dump_nvidia_pickle(fb.nvidia_snapshot(tree), tmp_path / "other.pkl", fb.sentinel_source(sentinel))
    with pytest.raises(DatasetGANError, match="unknown generator architecture.*'stage1' of class ProgressiveStage.*"
                                              "StyleGAN2.*StyleGAN3.*StyleGAN1") as refused:
        load_network_file(path)
    assert "\n" not in str(refused.value)

    tree = fb.generator_tree(network.state_dict(), network.init_kwargs)
    tree.state["_modules"]["synthesis"].state["_modules"]["b8"].state["architecture"] = "resnet"
    path = fb.dump_nvidia_pickle(fb.nvidia_snapshot(tree), tmp_path / "resnet.pkl", fb.sentinel_source(sentinel))
    with pytest.raises(DatasetGANError, match="'resnet' architecture.*skip"):
        load_network_file(path)


# --- malicious pickles ---------------------------------------------------------------------------


def _malicious(kind: str, tmp_path: Path, sentinel: Path) -> tuple[Path, str]:
    """(file, the global the refusal must name)."""
    path = tmp_path / f"{kind}.pkl"
    if kind == "os.system":
        payload = fb.Reduce(os.system, f"touch {sentinel}")
        name = f"{os.system.__module__}.system"
    elif kind == "eval":
        payload = fb.Reduce(eval, f"open({str(sentinel)!r}, 'w').write('pwned')")
        name = "builtins.eval"
    elif kind == "popen":
        payload = fb.Reduce(subprocess.Popen, ["touch", str(sentinel)])
        name = "subprocess.Popen"
    elif kind == "unknown-class":
        path.write_bytes(b"\x80\x02cevil_module\nPayload\n)\x81.")  # GLOBAL, EMPTY_TUPLE, NEWOBJ, STOP
        return path, "evil_module.Payload"
    elif kind == "torch-module":  # a plain (non-persistent) torch module: NEWOBJ of its class
        payload = {"G_ema": torch.nn.Linear(2, 2)}
        name = "torch.nn.modules.linear.Linear"
    elif kind == "tensorflow":
        path.write_bytes(b"\x80\x03cdnnlib.tflib.network\nNetwork\n)\x81.")
        return path, "dnnlib.tflib.network.Network"
    elif kind == "nested-in-snapshot":
        data = fb.nvidia_snapshot(fb.generator_tree(tiny_network().state_dict(), tiny_network().init_kwargs))
        data["training_set_kwargs"]["path"] = fb.Reduce(os.system, f"touch {sentinel}")
        fb.dump_nvidia_pickle(data, path, fb.sentinel_source(sentinel))
        return path, f"{os.system.__module__}.system"
    elif kind == "nested-in-network-state":
        tree = fb.generator_tree(tiny_network().state_dict(), tiny_network().init_kwargs)
        tree.state["_modules"]["mapping"].state["w_avg_beta"] = fb.Reduce(eval, f"open({str(sentinel)!r}, 'w')")
        fb.dump_nvidia_pickle(fb.nvidia_snapshot(tree), path, fb.sentinel_source(sentinel))
        return path, "builtins.eval"
    elif kind == "nested-in-storage-bytes":  # torch.storage._load_from_bytes of a hostile stream
        evil = fb.legacy_storage_bytes(fb.Reduce(os.system, f"touch {sentinel}"))
        payload = {"G_ema": fb.Reduce(torch.storage._load_from_bytes, evil)}
        name = f"{os.system.__module__}.system"
    else:
        raise ValueError(kind)
    path.write_bytes(pickle.dumps(payload, protocol=3))
    return path, name


MALICIOUS = ["os.system", "eval", "popen", "unknown-class", "torch-module", "tensorflow",
             "nested-in-snapshot", "nested-in-network-state", "nested-in-storage-bytes"]


@pytest.mark.parametrize("kind", MALICIOUS)
def test_malicious_pickles_are_refused_by_name(tmp_path, sentinel, kind):
    path, name = _malicious(kind, tmp_path, sentinel)
    with pytest.raises(DatasetGANError, match=rf"refusing to load .*global {name.replace('.', '[.]')},"):
        load_network_file(path)
    with pytest.raises(DatasetGANError, match=name.replace(".", "[.]")):
        load_network_ref(str(path))
    if kind == "tensorflow":
        with pytest.raises(DatasetGANError, match="TensorFlow"):
            load_network_file(path)


def test_malicious_module_src_is_never_run(tmp_path, sentinel):
    """module_src that writes the sentinel: the network loads, the source is ignored."""
    network = tiny_network()
    path = tiny_pickle(tmp_path / "g.pkl", sentinel, network=network)
    assert fb.sentinel_source(sentinel) in path.read_bytes().decode("latin-1")
    assert same_weights(load_network_file(path), network)


def test_persistent_ids_are_refused(tmp_path):
    class PidPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage-0" if isinstance(obj, torch.Tensor) else None

    path = tmp_path / "pid.pkl"
    with open(path, "wb") as f:
        PidPickler(f, protocol=3).dump({"G_ema": torch.zeros(2)})
    with pytest.raises(DatasetGANError, match="persistent ids"):
        load_network_file(path)


def test_malicious_rosinality_checkpoint_is_refused(tmp_path, sentinel):
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "args": fb.Reduce(os.system, f"touch {sentinel}")}, path)
    with pytest.raises(DatasetGANError, match=rf"global {os.system.__module__}[.]system,"):
        load_network_file(path)


# --- rosinality checkpoints ------------------------------------------------------------------------


def rosinality_args(**overrides):
    return argparse.Namespace(**dict(dict(size=16, latent=16, n_mlp=2, channel_multiplier=2, arch="stylegan2",
                                          iter=800000, batch=16, r1=10, path="lmdb/"), **overrides))


def test_rosinality_round_trip_is_exact(tmp_path):
    network = tiny_network()
    sd = fb.rosinality_state_dict(network.state_dict(), 16)
    path = fb.save_rosinality_checkpoint(tmp_path / "050000.pt", sd, rosinality_args(), network.mapping.w_avg.clone())
    assert detect_format(path) == "torch"
    loaded = load_network_file(path)
    assert loaded.init_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert same_weights(loaded, network)
    assert torch.equal(images(loaded), images(network))


def test_rosinality_names_mean_rosinality_maths(tmp_path):
    """Our network on mapped weights = rosinality's maths on the original state dict."""
    network = tiny_network(seed=3)
    sd = fb.rosinality_state_dict(network.state_dict(), 16)
    loaded = load_network_file(fb.save_rosinality_checkpoint(tmp_path / "g.pt", sd, rosinality_args(), None))
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = loaded.mapping(z)
        assert close(ws[:, 0], fb.rosinality_reference_mapping(sd, z), 1e-5)
        assert close(loaded.synthesis(ws, noise_mode="const"), fb.rosinality_reference_synthesis(sd, ws), TOL)


def test_rosinality_without_latent_avg_estimates_it(tmp_path):
    network = tiny_network()
    sd = fb.rosinality_state_dict(network.state_dict(), 16)
    path = fb.save_rosinality_checkpoint(tmp_path / "g.pt", sd, rosinality_args(), None)
    a, b = load_network_file(path), load_network_file(path)
    assert torch.equal(a.mapping.w_avg, b.mapping.w_avg)  # deterministic
    z = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert close(a.mapping.w_avg, a.mapping(z)[:, 0].mean(0), 1e-5)
    assert torch.equal(estimate_w_avg(a), a.mapping.w_avg)
    assert torch.equal(images(a, psi=1.0), images(network, psi=1.0))  # only truncation uses w_avg


def test_rosinality_bare_state_dict_and_inconsistent_args(tmp_path):
    network = tiny_network()
    sd = fb.rosinality_state_dict(network.state_dict(), 16)
    torch.save(sd, tmp_path / "bare.pth")
    assert torch.equal(images(load_network_file(tmp_path / "bare.pth"), psi=1.0), images(network, psi=1.0))
    path = fb.save_rosinality_checkpoint(tmp_path / "g.pt", sd, rosinality_args(size=256), None)
    with pytest.raises(DatasetGANError, match="args.size is 256 but the weights say 16"):
        load_network_file(path)
    path = fb.save_rosinality_checkpoint(tmp_path / "swa.pt", sd, rosinality_args(arch="swagan"), None)
    with pytest.raises(DatasetGANError, match="swagan"):
        load_network_file(path)


# --- formats, convert, info ------------------------------------------------------------------------


def test_content_not_suffix_decides(tmp_path, sentinel):
    network = tiny_network()
    pkl_as_pt = tiny_pickle(tmp_path / "really_a_pickle.pt", sentinel, network=network)
    sd = fb.rosinality_state_dict(network.state_dict(), 16)
    pt_as_pkl = fb.save_rosinality_checkpoint(tmp_path / "really_rosinality.pkl", sd, rosinality_args(),
                                              network.mapping.w_avg.clone())
    save_generator(network, tmp_path / "ours.bin")
    for path in (pkl_as_pt, pt_as_pkl, tmp_path / "ours.bin"):
        assert same_weights(load_network_ref(str(path)), network), path


def test_all_formats_load_to_the_same_network(tmp_path, sentinel):
    network = tiny_network()
    save_generator(network, tmp_path / "g.safetensors")
    tiny_pickle(tmp_path / "g.pkl", sentinel, network=network)
    fb.save_rosinality_checkpoint(tmp_path / "g.pt", fb.rosinality_state_dict(network.state_dict(), 16),
                                  rosinality_args(), network.mapping.w_avg.clone())
    loaded = [load_network_ref(str(tmp_path / name)) for name in ("g.safetensors", "g.pkl", "g.pt")]
    for other in loaded:
        assert other.init_kwargs == loaded[0].init_kwargs
        assert same_weights(other, network)
        assert torch.equal(images(other), images(network))


def test_convert_round_trip_and_describe(tmp_path, sentinel, reference):
    state, init_kwargs, t = reference
    src = fb.dump_nvidia_pickle(fb.nvidia_snapshot(fb.generator_tree(state, init_kwargs)), tmp_path / "g.pkl",
                                fb.sentinel_source(sentinel))
    converted = convert(src, tmp_path / "g.safetensors")
    again = load_network(tmp_path / "g.safetensors")
    assert again.init_kwargs == converted.init_kwargs == init_kwargs
    assert same_weights(again, converted)
    with torch.no_grad():
        assert close(again.synthesis(t["psi070.ws"], noise_mode="const"), t["psi070.img"], TOL)
    info = describe(again)
    json.dumps(info)  # printable as JSON
    assert info["num_ws"] == 10 and info["resolution"] == 64 and info["parameters"] == 1_395_288
    assert info["architecture"].startswith("StyleGAN2") and info["c_dim"] == 0
    assert [layer["name"] for layer in info["feature_layers"]][:3] == ["b4.conv1", "b8.conv0", "b8.conv1"]
    assert [layer["resolution"] for layer in info["feature_layers"]] == [4, 8, 8, 16, 16, 32, 32, 64, 64]
    assert info["feature_dim"] == 7 * 128 + 2 * 64 == sum(l["channels"] for l in info["feature_layers"])


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b"\x00" * 64, b"", b"GIF89a....."])
def test_unknown_file_types_are_refused(tmp_path, content):
    path = tmp_path / "g.pkl"
    path.write_bytes(content)
    with pytest.raises(DatasetGANError, match="not a recognised generator file.*safetensors.*pickles.*rosinality"):
        load_network_file(path)


def test_unreadable_or_wrong_files(tmp_path):
    with pytest.raises(DatasetGANError, match="unknown generator 'nowhere.pkl': give builtin:NAME"):
        load_network_ref("nowhere.pkl")
    (tmp_path / "truncated.pkl").write_bytes(pickle.dumps({"a": list(range(100))}, protocol=3)[:40])
    with pytest.raises(DatasetGANError, match="not a readable pickle"):
        load_network_file(tmp_path / "truncated.pkl")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    with pytest.raises(DatasetGANError, match="no generator network"):
        load_network_file(tmp_path / "plain.pkl")
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(DatasetGANError, match="without a g_ema entry"):
        load_network_file(tmp_path / "other.pt")
