"""StyleGAN1 (the DatasetGAN release's g_all): network, release files and Generator interface.

The fixture holds outputs of the release's own `models/stylegan1.py` for a small configuration
with perturbed weights and fixed noise; matching them number for number says our maths is theirs.
"""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from conftest import load_reference, state_under
from datasetgan.errors import DatasetGANError
from datasetgan.generators.base import zs_from_seeds
from datasetgan.generators.stylegan1 import (
    EqualizedConv2d,
    NoiseLayer,
    StyleGAN1Generator,
    load_release_generator,
    release_init_kwargs,
    upscale2d,
)
from datasetgan.generators.stylegan1_generator import StyleGAN1

FIXTURE = "stylegan1_datasetgan_reference_32.safetensors"
TOL = 1e-4
PARAMS = 2_774_883


@pytest.fixture(scope="module")
def reference():
    tensors, meta = load_reference(FIXTURE)
    kwargs = {k: int(meta[k]) for k in ("resolution", "fmap_base", "fmap_max")}
    network = StyleGAN1Generator(**kwargs).eval()
    network.load_g_all(release_state(tensors), tensors["avg_latent"])
    return network, tensors, meta


def release_state(tensors: dict) -> dict:
    return state_under(tensors, "g_all.")


def fixture_noise(network: StyleGAN1Generator, tensors: dict) -> list[torch.Tensor]:
    """The fixture's maps in our forward order, named by our noise layers' module paths (the release's)."""
    names = [name for name, m in network.g_synthesis.named_modules() if isinstance(m, NoiseLayer)]
    return [tensors[f"noise.{name}"] for name in names]


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() < tol


def assert_one_line_error(call, *fragments: str) -> None:
    with pytest.raises(DatasetGANError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# --- reference match -----------------------------------------------------------------------


def test_release_state_dict_loads_strict(reference):
    network, t, _ = reference
    state = release_state(t)
    assert sum(v.numel() for k, v in state.items() if not k.endswith(".kernel")) == PARAMS
    assert sum(p.numel() for p in network.parameters()) == PARAMS
    assert set(network.state_dict()) == set(state) | {"avg_latent"}
    network.load_state_dict({**state, "avg_latent": t["avg_latent"]}, strict=True)
    assert torch.equal(network.avg_latent, t["avg_latent"])


def test_mapping_and_truncation_match_reference(reference):
    network, t, meta = reference
    truncation = json.loads(meta["truncation"])
    with torch.no_grad():
        ws = network.mapping(t["z"])
        truncated = network.truncate(t["ws_untruncated"], truncation["threshold"], truncation["max_layer"])
    assert close(ws, t["ws_untruncated"])
    assert close(truncated, t["ws"])
    assert torch.equal(truncated[:, truncation["max_layer"]:], t["ws_untruncated"][:, truncation["max_layer"]:])


def test_image_and_every_feature_match_reference(reference):
    network, t, meta = reference
    noise = fixture_noise(network, t)
    assert [m.shape[-1] for m in noise] == network.noise_resolutions == [4, 4, 8, 8, 16, 16, 32, 32]
    with torch.no_grad():
        img, features = network.synthesis(t["ws"], noise, return_features=True)
        noiseless = network.synthesis(t["ws"])
    assert close(img, t["img"])
    assert (noiseless - t["img"]).abs().max() > 1e-2  # the noise maps really enter
    assert [f.shape[1] for f in features] == json.loads(meta["feature_channels"])
    for idx, feature in enumerate(features):
        assert close(feature[:1], t[f"feature.{idx:02d}"]), idx


# --- network facts -------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [256, 512, 1024])
def test_architecture_is_inferred_from_release_names_and_shapes(resolution):
    """The released configs (fmap_base 8192, fmap_max 512): cats/bedrooms, cars, faces."""
    with torch.device("meta"):
        network = StyleGAN1Generator(resolution=resolution)
    state = {k: v for k, v in network.state_dict().items() if k != "avg_latent"}
    assert release_init_kwargs(state) == network.init_kwargs == dict(resolution=resolution, fmap_base=8192,
                                                                      fmap_max=512)
    assert network.block_channels[resolution] == 8192 * 2 // resolution


@pytest.mark.parametrize("in_res, flip", [(64, True), (32, False)])
def test_upscale_conv_paths(in_res, flip):
    """Below 128 px output: nearest x2 + conv; from 128 px the release's fused transposed conv,
    which equals nearest x2 + conv with the spatially flipped kernel. Blur and bias follow."""
    torch.manual_seed(0)
    conv = EqualizedConv2d(5, 7, 3, gain=2**0.5, upscale=True)
    with torch.no_grad():
        conv.bias.normal_()
        x = torch.randn(2, 5, in_res, in_res)
        weight = conv.weight * conv.w_mul
        weight = weight.flip(-1, -2) if flip else weight
        expected = F.conv2d(upscale2d(x), weight, padding=1)
        blur = torch.tensor([1.0, 2.0, 1.0])
        blur = (blur[:, None] * blur[None, :] / 16).expand(7, 1, 3, 3)
        expected = F.conv2d(expected, blur, padding=1, groups=7) + conv.bias.view(1, -1, 1, 1)
        assert close(conv(x), expected)


def test_own_state_dict_round_trips_with_init_kwargs(reference, tmp_path):
    network, t, _ = reference
    path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    rebuilt = StyleGAN1Generator(**json.loads(json.dumps(network.init_kwargs))).eval()
    rebuilt.load_state_dict(load_file(str(path)), strict=True)
    noise = fixture_noise(network, t)
    with torch.no_grad():
        assert torch.equal(rebuilt(t["z"], 0.7, 8, noise), network(t["z"], 0.7, 8, noise))


def test_bad_inputs_are_one_line_errors(reference):
    network, t, _ = reference
    assert_one_line_error(lambda: network.mapping(torch.zeros(2, 16)), "z has shape [2, 16], expected [N, 512]")
    assert_one_line_error(lambda: network.synthesis(t["ws"][:, :8]), "ws has shape [2, 8, 512], expected [N, 18, 512]")
    assert_one_line_error(lambda: network.truncate(t["ws"], 0.7, 19), "cutoff 19 is out of range")
    noise = fixture_noise(network, t)
    assert_one_line_error(lambda: network.synthesis(t["ws"], noise[:3]), "got 3 noise maps, expected", "(8)")
    assert_one_line_error(lambda: network.synthesis(t["ws"], noise[::-1]), "noise map 0 has shape [1, 1, 32, 32]")
    assert_one_line_error(lambda: StyleGAN1Generator(resolution=48), "resolution 48 is not supported")


# --- the release's files -------------------------------------------------------------------


def write_release_files(tmp_path, state: dict, avg_latent: np.ndarray):
    pt, npy = tmp_path / "ffhq.for_g_all.pt", tmp_path / "avg_latent_stylegan1.npy"
    torch.save(state, pt)
    np.save(npy, avg_latent)
    return pt, npy


def test_load_release_generator_reproduces_reference(reference, tmp_path):
    network, t, _ = reference
    loaded = load_release_generator(*write_release_files(tmp_path, release_state(t), t["avg_latent"].numpy()))
    assert loaded.init_kwargs == network.init_kwargs and not loaded.training
    noise = fixture_noise(loaded, t)
    with torch.no_grad():
        ws = loaded.truncate(loaded.mapping(t["z"]), 0.7, 8)
        img, features = loaded.synthesis(ws, noise, return_features=True)
    assert close(ws, t["ws"]) and close(img, t["img"])
    assert all(close(f[:1], t[f"feature.{i:02d}"]) for i, f in enumerate(features))


def test_avg_latent_of_one_row_applies_to_every_slot(reference, tmp_path):
    """make_training_data.py re-saves `avg_latent[0]`: a [512] file is the same latent for all 18 slots."""
    _, t, _ = reference
    row = t["avg_latent"][3].numpy()
    loaded = load_release_generator(*write_release_files(tmp_path, release_state(t), row))
    assert torch.equal(loaded.avg_latent, torch.from_numpy(row).expand(18, 512))


def test_bad_release_files_are_one_line_errors(reference, tmp_path):
    _, t, _ = reference
    state = release_state(t)
    files = write_release_files(tmp_path, state, np.zeros((3, 512), np.float32))
    assert_one_line_error(lambda: load_release_generator(*files),
                          "avg latent has shape [3, 512], expected [18, 512] or [512]")
    files = write_release_files(tmp_path, {"mapping.fc0.weight": torch.zeros(512, 512)}, t["avg_latent"].numpy())
    assert_one_line_error(lambda: load_release_generator(*files), "not a DatasetGAN StyleGAN1 g_all state dict",
                          "missing g_mapping.dense0.weight, g_synthesis.blocks.4x4.const, g_synthesis.torgb.weight")
    incomplete = {k: v for k, v in state.items() if k != "g_synthesis.blocks.8x8.epi2.style_mod.lin.bias"}
    files = write_release_files(tmp_path, incomplete, t["avg_latent"].numpy())
    assert_one_line_error(lambda: load_release_generator(*files), "missing g_synthesis.blocks.8x8.epi2.style_mod.lin.bias")
    files = write_release_files(tmp_path, {"g": argparse.Namespace()}, t["avg_latent"].numpy())
    assert_one_line_error(lambda: load_release_generator(*files), "is not a readable torch state dict")
    assert_one_line_error(lambda: load_release_generator(tmp_path / "none.pt", files[1]), "no g_all checkpoint at")


# --- Generator interface -------------------------------------------------------------------


def test_ws_from_seeds_maps_and_truncates_nvidia_zs(reference):
    network, _, _ = reference
    generator = StyleGAN1(network, device="cpu")
    ws = generator.ws_from_seeds([42, 7], psi=0.7, truncation_cutoff=8)
    with torch.no_grad():
        expected = network.truncate(network.mapping(zs_from_seeds([42, 7], 512)), 0.7, 8)
    assert ws.shape == (2, 18, 512) and close(ws, expected)
    assert torch.equal(generator.ws_from_seeds([7])[0], generator.ws_from_seeds([42, 7])[1])  # a seed names its w
    untruncated = generator.ws_from_seeds([7], psi=1.0)
    assert torch.equal(generator.ws_from_seeds([7], psi=0.0), network.avg_latent[None])
    assert not torch.equal(untruncated, generator.ws_from_seeds([7]))
    assert_one_line_error(lambda: generator.ws_from_seeds([1], class_ids=[0]), "unconditional")


def test_synthesize_is_deterministic_with_documented_pyramid(reference):
    generator = StyleGAN1(reference[0], device="cpu")
    ws = generator.ws_from_seeds([42, 7])
    img, features = generator.synthesize(ws)
    img2, features2 = generator.synthesize(generator.ws_from_seeds([42, 7]))
    assert torch.equal(generator.to_uint8(img), generator.to_uint8(img2))
    assert torch.equal(img, img2) and all(torch.equal(a, b) for a, b in zip(features, features2))
    assert img.shape == (2, 3, 32, 32) and img.dtype == torch.float32 and img.abs().max() <= 1
    assert [(layer.name, layer.channels, layer.resolution) for layer in generator.feature_layers] == [
        ("b4.epi2", 64, 4), ("b4.conv", 64, 4), ("b8.epi2", 64, 8), ("b8.conv1", 64, 8),
        ("b16.epi2", 64, 16), ("b16.conv1", 64, 16), ("b32.epi2", 32, 32), ("b32.conv1", 32, 32)]
    for f, c, r in zip(features, generator.feature_channels, generator.feature_resolutions):
        assert f.shape == (2, c, r, r) and f.dtype == torch.float32


def test_noise_is_fixed_per_id_and_shared_without_ids(reference):
    generator = StyleGAN1(reference[0], device="cpu")
    ws = generator.ws_from_seeds([9, 6, 5])
    alone, in_batch = generator.noise_maps([6]), generator.noise_maps([9, 6, 5])
    assert all(torch.equal(a[0], b[1]) for a, b in zip(alone, in_batch))  # drawn from the id alone
    assert all(not torch.equal(b[0], b[1]) for b in in_batch)
    assert [m.shape[-1] for m in alone] == generator.network.noise_resolutions
    img_alone = generator.synthesize(ws[1:2], [6])[0]
    assert close(img_alone[0], generator.synthesize(ws, [9, 6, 5])[0][1], 1e-5)  # same id, another batch
    assert (img_alone - generator.synthesize(ws[1:2], [5])[0]).abs().max() > 1e-3  # another id, another image
    shared = generator.synthesize(ws)[0]
    assert close(shared[1], generator.synthesize(ws[1:2])[0][0], 1e-5)  # without ids: the latent alone decides
    with torch.no_grad():
        assert (shared - generator.network.synthesis(ws).clamp(-1, 1)).abs().max() > 1e-3  # and it is real noise
    assert_one_line_error(lambda: generator.synthesize(ws, [1]), "got 1 noise ids for 3 latents")
