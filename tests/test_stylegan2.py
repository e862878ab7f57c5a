"""StyleGAN2 network, Generator interface and checkpoint format.

The fixture holds outputs of NVIDIA's reference implementation for a small configuration;
matching them number for number is what says our maths is theirs.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import load_reference, state_under
from datasetgan.errors import DatasetGANError
from datasetgan.generators.base import zs_from_seeds
from datasetgan.generators.checkpoint import load_network, save_generator
from datasetgan.generators.stylegan2 import StyleGAN2Generator
from datasetgan.generators.stylegan2_generator import StyleGAN2

FIXTURE = "stylegan2_reference_64.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    tensors, meta = load_reference(FIXTURE)
    network = StyleGAN2Generator(**json.loads(meta["init_kwargs"])).eval()
    network.load_state_dict(state_under(tensors, "G_ema."), strict=True)
    return network, tensors, meta


def tiny_network(seed: int = 0, **synthesis_kwargs) -> StyleGAN2Generator:
    """16x16, 16 channels, with every parameter perturbed so noise, biases and w_avg all matter."""
    torch.manual_seed(seed)
    kwargs = dict(channel_base=128, channel_max=16, **synthesis_kwargs)
    network = StyleGAN2Generator(16, 0, 16, 16, 3, mapping_kwargs={"num_layers": 2}, synthesis_kwargs=kwargs)
    with torch.no_grad():
        for name, t in network.state_dict().items():
            if "resample_filter" not in name:
                t.add_(0.1 * torch.randn_like(t))
    return network.eval()


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() < tol


# --- reference match -----------------------------------------------------------------------


@pytest.mark.parametrize("psi", ["100", "070"])
def test_mapping_matches_reference(reference, psi):
    network, t, _ = reference
    with torch.no_grad():
        ws = network.mapping(t["z"], None, truncation_psi=int(psi) / 100)
    assert close(ws, t[f"psi{psi}.ws"])


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("psi", ["100", "070"])
def test_image_matches_reference(reference, psi, fused):
    network, t, _ = reference
    with torch.no_grad():
        img = network.synthesis(t[f"psi{psi}.ws"], noise_mode="const", fused_modconv=fused)
    assert close(img, t[f"psi{psi}.img"])


def test_every_feature_matches_reference(reference):
    network, t, meta = reference
    names = json.loads(meta["feature_layers"])
    ours = {id(m): f"synthesis.{n}" for n, m in network.synthesis.named_modules()}
    assert [ours[id(layer)] for layer in network.synthesis.conv_layers()] == names
    with torch.no_grad():
        _, features = network.synthesis(t["psi100.ws"], noise_mode="const", return_features=True)
    assert len(features) == len(names)
    for name, feature in zip(names, features):
        assert close(feature, t[f"psi100.feature.{name}"]), name


def test_generator_interface_reproduces_reference(reference):
    network, t, _ = reference
    img, _ = StyleGAN2(network, device="cpu").synthesize(t["psi070.ws"])
    assert close(img, t["psi070.img"].clamp(-1, 1))


# --- network facts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resolution, channel_base, params, num_ws, channels",
    [(256, 16384, 24_767_458, 14, 4480), (512, 32768, 30_276_583, 16, 5504), (1024, 32768, 30_370_060, 18, 5568)],
)
def test_standard_config_sizes(resolution, channel_base, params, num_ws, channels):
    with torch.device("meta"):
        network = StyleGAN2Generator(
            512, 0, 512, resolution, 3,
            mapping_kwargs={"num_layers": 8}, synthesis_kwargs={"channel_base": channel_base, "channel_max": 512},
        )
    assert sum(p.numel() for p in network.parameters()) == params
    assert network.num_ws == num_ws == 2 * int(np.log2(resolution)) - 2
    assert sum(layer.weight.shape[0] for layer in network.synthesis.conv_layers()) == channels


def test_modconv_paths_agree():
    network = tiny_network(conv_clamp=2.0)
    ws = network.mapping(torch.randn(3, 16), truncation_psi=0.8)
    with torch.no_grad():
        img_a, feats_a = network.synthesis(ws, noise_mode="const", return_features=True)
        img_b, feats_b = network.synthesis(ws, noise_mode="const", fused_modconv=True, return_features=True)
    assert close(img_a, img_b, 1e-5)
    assert all(close(a, b, 1e-5) for a, b in zip(feats_a, feats_b))
    assert max(f.abs().max().item() for f in feats_a) <= 2.0  # conv_clamp applied


def test_truncation_cutoff_leaves_fine_styles_alone():
    network = tiny_network()
    z = torch.randn(2, 16)
    with torch.no_grad():
        full = network.mapping(z)
        cut = network.mapping(z, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.equal(cut[:, 2:], full[:, 2:])
    assert not torch.allclose(cut[:, :2], full[:, :2])


def test_w_avg_moves_only_when_asked():
    network = tiny_network()
    before = network.mapping.w_avg.clone()
    network.mapping(torch.randn(4, 16))
    assert torch.equal(network.mapping.w_avg, before)
    network.mapping(torch.randn(4, 16), update_emas=True)
    assert not torch.equal(network.mapping.w_avg, before)


def test_conditional_mapping_uses_embed():
    network = StyleGAN2Generator(8, 4, 8, 8, 3, synthesis_kwargs={"channel_base": 64, "channel_max": 8})
    assert "mapping.embed.weight" in network.state_dict()
    with torch.no_grad():
        img = network(torch.randn(2, 8), torch.eye(4)[:2], noise_mode="none")
    assert img.shape == (2, 3, 8, 8)


@pytest.mark.parametrize("fused", [False, True])
def test_backward_reaches_every_parameter(fused):
    network = tiny_network().train()
    img, features = network(torch.randn(2, 16), noise_mode="random", fused_modconv=fused, return_features=True)
    (img.square().mean() + sum(f.mean() for f in features)).backward()
    for name, p in network.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_double_backward_through_synthesis():
    """Path-length regularisation differentiates a gradient with respect to ws."""
    network = tiny_network().train()
    ws = network.mapping(torch.randn(2, 16))
    img = network.synthesis(ws, noise_mode="const")
    (grad_ws,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    grad_ws.square().sum().backward()
    assert torch.isfinite(network.synthesis.b16.conv0.weight.grad).all()


# --- Generator interface -------------------------------------------------------------------


def test_synthesize_is_deterministic_with_documented_pyramid():
    generator = StyleGAN2(tiny_network(), device="cpu")
    ws = generator.ws_from_seeds([42, 7])
    img, pyramid = generator.synthesize(ws)
    img2, pyramid2 = generator.synthesize(generator.ws_from_seeds([42, 7]))
    assert torch.equal(img, img2) and all(torch.equal(a, b) for a, b in zip(pyramid, pyramid2))
    assert ws.shape == (2, generator.num_ws, generator.w_dim)
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.float32 and img.abs().max() <= 1
    assert len(pyramid) == len(generator.feature_channels) == 2 * int(np.log2(16)) - 3
    for f, c, r in zip(pyramid, generator.feature_channels, generator.feature_resolutions):
        assert f.shape == (2, c, r, r)
    assert generator.feature_resolutions == [4, 8, 8, 16, 16]
    assert [layer.name for layer in generator.feature_layers] == ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0",
                                                                  "b16.conv1"]


def test_seeds_follow_nvidia_convention():
    generator = StyleGAN2(tiny_network(), device="cpu")
    z = zs_from_seeds([42], generator.z_dim)
    assert torch.equal(z[0], torch.from_numpy(np.random.RandomState(42).randn(16)).float())


def test_to_uint8():
    out = StyleGAN2.to_uint8(torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    assert out.dtype == torch.uint8 and out.tolist() == [0, 128, 255, 255]


# --- checkpoint ----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    network = tiny_network()
    save_generator(network, tmp_path / "g.safetensors")
    loaded = load_network(tmp_path / "g.safetensors")
    assert loaded.init_kwargs == network.init_kwargs
    ws = StyleGAN2(network, device="cpu").ws_from_seeds([1, 2])
    assert torch.equal(StyleGAN2(network, "cpu").synthesize(ws)[0], StyleGAN2(loaded, "cpu").synthesize(ws)[0])


def test_mismatched_weights_raise(tmp_path):
    network = tiny_network()
    state = {k: v.contiguous() for k, v in network.state_dict().items()}
    kwargs = dict(network.init_kwargs, synthesis_kwargs={"channel_base": 256, "channel_max": 32})
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={"format": "datasetgan.stylegan2", "init_kwargs": json.dumps(kwargs)})
    with pytest.raises(DatasetGANError, match="do not fit"):
        load_network(path)


@pytest.mark.parametrize("content", [None, b"not a safetensors file"])
def test_missing_or_odd_file_raises(tmp_path, content):
    path = tmp_path / "g.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetGANError, match=str(path)):
        load_network(path)


def test_foreign_safetensors_raises(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(DatasetGANError, match="not a datasetgan generator"):
        load_network(path)


def test_per_sample_noise_is_named_by_the_noise_id_alone():
    generator = StyleGAN2(tiny_network(), device="cpu")
    w = generator.ws_from_seeds([5])
    first, again = generator.synthesize(w, [5])[0], generator.synthesize(w, [5])[0]
    assert torch.equal(generator.to_uint8(first), generator.to_uint8(again))  # same seed, same bytes
    other = generator.synthesize(w, [6])[0]
    assert (first - other).abs().max() > 1e-3  # same w, another noise id: another image
    assert not torch.equal(first, generator.synthesize(w)[0])  # per-sample noise is not the stored constant
    alone, in_batch = generator.noise_maps([6]), generator.noise_maps([9, 6, 5])
    assert all(torch.equal(a[0], b[1]) for a, b in zip(alone, in_batch))  # independent of batch composition
    assert all(not torch.equal(b[0], b[1]) for b in in_batch)
    assert [m.shape[-1] for m in alone] == generator.feature_resolutions


def test_noise_maps_replace_only_the_noise():
    """Explicit maps equal to the stored constant give the constant-noise image exactly."""
    network = tiny_network()
    ws = StyleGAN2(network, device="cpu").ws_from_seeds([1, 2])
    maps = [layer.noise_const.expand(2, 1, -1, -1) for layer in network.synthesis.conv_layers()]
    with torch.no_grad():
        assert torch.equal(network.synthesis(ws, noise_mode="const"), network.synthesis(ws, noise_maps=maps))
