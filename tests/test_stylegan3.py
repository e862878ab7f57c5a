"""StyleGAN3 network (alias-free "T" and "R") and its Generator interface.

The fixture holds outputs of NVIDIA's reference implementation for a small "T" configuration;
matching them number for number, layer by layer, is what says our maths is theirs. The
alignment tests pin the feature pyramid to the image: centred (a point-symmetric network gives
point-symmetric levels, which a crop one sample off would break) and at the right pitch (a
translation moves every level by its own number of samples and the image by its pixels).
"""

import json

import numpy as np
import pytest
import torch

from conftest import load_reference, state_under
from datasetgan.errors import DatasetGANError
from datasetgan.generators import stylegan3
from datasetgan.generators.stylegan3 import StyleGAN3Generator, design_lowpass_filter, upfirdn2d
from datasetgan.generators.stylegan3_generator import StyleGAN3

FIXTURE = "stylegan3t_reference_64.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    tensors, meta = load_reference(FIXTURE)
    network = StyleGAN3Generator(**json.loads(meta["init_kwargs"])).eval()
    network.load_state_dict(state_under(tensors, "G_ema."), strict=True)
    return network, tensors, meta


@pytest.fixture(scope="module")
def reference_psi100(reference):
    """Our synthesis of the fixture's psi=1 latents, with every layer's raw output captured by hooks."""
    network, t, _ = reference
    captured = {}
    modules = {"input": network.synthesis.input, **dict(zip(network.synthesis.layer_names, network.synthesis.layers()))}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
             for name, m in modules.items()]
    with torch.no_grad():
        img, features = network.synthesis(t["psi100.ws"], return_features=True)
    for hook in hooks:
        hook.remove()
    return img, features, captured


def tiny_network(seed: int = 0, c_dim: int = 0, **synthesis_kwargs) -> StyleGAN3Generator:
    """32x32 at rates 16 and 32, at most 32 channels, with biases perturbed so every lrelu bends."""
    torch.manual_seed(seed)
    kwargs = dict(channel_base=512, channel_max=32, **synthesis_kwargs)
    network = StyleGAN3Generator(16, c_dim, 16, 32, 3, mapping_kwargs={"num_layers": 2}, **kwargs)
    with torch.no_grad():
        for layer in network.synthesis.layers():
            layer.bias.normal_(0, 0.2)
    return network.eval()


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# --- reference match -----------------------------------------------------------------------


def test_state_dict_loads_strictly_with_reference_filters(reference):
    network, t, meta = reference
    assert network.synthesis.layer_names == json.loads(meta["layer_names"])
    assert sum(p.numel() for p in network.parameters()) == int(meta["n_params_G_ema"])
    # our filter design reproduces the reference's buffers, not merely their shapes
    fresh = StyleGAN3Generator(**json.loads(meta["init_kwargs"])).state_dict()
    filters = [k for k in fresh if k.endswith("_filter")]
    assert len(filters) == 2 * 14
    for name in filters:
        assert max_error(fresh[name], t[f"G_ema.{name}"]) < 1e-7, name
    for name, layer in zip(network.synthesis.layer_names, network.synthesis.layers()):
        attrs = json.loads(meta["layer_attrs"])[name]
        assert (layer.in_size, layer.out_size, layer.out_channels, layer.out_sampling_rate) == (
            attrs["in_size"][0], attrs["out_size"][0], attrs["out_channels"], attrs["out_sampling_rate"])


@pytest.mark.parametrize("psi", ["100", "070"])
def test_mapping_matches_reference(reference, psi):
    network, t, _ = reference
    with torch.no_grad():
        ws = network.mapping(t["z"], None, truncation_psi=int(psi) / 100)
    assert max_error(ws, t[f"psi{psi}.ws"]) < TOL


@pytest.mark.parametrize("psi", ["100", "070"])
def test_image_matches_reference(reference, reference_psi100, psi):
    network, t, _ = reference
    if psi == "100":
        img = reference_psi100[0]
    else:
        with torch.no_grad():
            img = network.synthesis(t[f"psi{psi}.ws"])
    assert max_error(img, t[f"psi{psi}.img"]) < TOL


def test_every_layer_output_matches_reference(reference, reference_psi100):
    network, t, _ = reference
    _, features, captured = reference_psi100
    names = ["input", *network.synthesis.layer_names]
    assert sorted(f"psi100.feature.synthesis.{n}" for n in names) == sorted(k for k in t if ".feature." in k)
    for name in names:
        assert max_error(captured[name][:1], t[f"psi100.feature.synthesis.{name}"]) < TOL, name
    # return_features gives the same raw outputs, ToRGB's excluded
    assert len(features) == len(names) - 2
    assert all(torch.equal(f, captured[n]) for f, n in zip(features, network.synthesis.layer_names))


def test_generator_interface_reproduces_reference(reference):
    network, t, _ = reference
    img, pyramid = StyleGAN3(network, device="cpu").synthesize(t["psi070.ws"])
    assert max_error(img, t["psi070.img"].clamp(-1, 1)) < TOL
    assert [f.shape[-1] for f in pyramid] == [16] * 4 + [32] * 4 + [64] * 6


# --- network facts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resolution, kwargs, params",
    [
        (1024, dict(channel_base=32768, channel_max=512), 22_313_167),
        (512, dict(channel_base=32768, channel_max=512), 24_873_519),
        (256, dict(channel_base=32768, channel_max=512), 28_472_133),
        (1024, dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True), 15_093_151),
    ],
)
def test_standard_config_sizes(resolution, kwargs, params):
    with torch.device("meta"):
        network = StyleGAN3Generator(512, 0, 512, resolution, 3, mapping_kwargs={"num_layers": 2}, **kwargs)
    assert sum(p.numel() for p in network.parameters()) == params
    assert network.num_ws == 16
    layers = network.synthesis.layers()
    assert [layer.out_size for layer in layers[-3:]] == [resolution + 20, resolution, resolution]
    radial = [layer.down_filter.ndim == 2 for layer in layers[:-1]]
    assert radial == [kwargs.get("use_radial_filters", False)] * 12 + [False] * 2  # critically sampled: separable


def test_radial_filter_is_a_round_lowpass():
    """The R config's jinc filter: unit DC gain, round, passes below the cutoff, stops past the stopband."""
    numtaps, cutoff, half_width, fs = 12, 8.0, 4.0, 32
    f = design_lowpass_filter(numtaps, cutoff, half_width * 2, fs, radial=True).double()
    assert f.shape == (numtaps, numtaps) and abs(f.sum().item() - 1) < 1e-6
    assert torch.equal(f, f.t()) and torch.equal(f, f.flip(0))

    def response(fx: float, fy: float) -> float:
        x = (torch.arange(numtaps, dtype=torch.float64) - (numtaps - 1) / 2) / fs
        phase = 2 * torch.pi * (fx * x[None, :] + fy * x[:, None])
        return (f * torch.cos(phase)).sum().item()

    for radius in (2.0, 6.0, 10.0):
        assert abs(response(radius, 0) - response(radius / 2**0.5, radius / 2**0.5)) < 0.02, radius
    assert response(2.0, 0) > 0.99 and abs(response(cutoff, 0) - 0.5) < 0.1
    assert abs(response(cutoff + half_width, 0)) < 0.01  # the stopband


def test_two_dimensional_fir_equals_separable():
    """The radial filters' 2-D path and the separable path agree on a separable filter."""
    f = design_lowpass_filter(12, 8.0, 8.0, 32)
    x = torch.randn(2, 3, 20, 20)
    for kwargs in (dict(up=2, padding=(9, 8, 7, 6), gain=4), dict(down=2), dict(up=2, down=2, padding=(3, 1, 2, 0))):
        assert max_error(upfirdn2d(x, torch.outer(f, f), **kwargs), upfirdn2d(x, f, **kwargs)) < 1e-5, kwargs


def test_r_config_runs_and_keeps_its_geometry():
    network = tiny_network(conv_kernel=1, use_radial_filters=True)
    assert network.synthesis.L0_36_32.weight.shape[-1] == 1
    with torch.no_grad():
        img, features = network.synthesis(network.mapping(torch.randn(2, 16)), return_features=True)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    assert [f.shape[-1] for f in features] == [layer.out_size for layer in network.synthesis.layers()[:-1]]


@pytest.mark.parametrize("kwargs", [{}, dict(conv_kernel=1, use_radial_filters=True)])
def test_forward_makes_its_tensors_on_the_input_device(kwargs):
    """No tensor of the forward pass is made on a fixed device, so the same code runs on CUDA: the
    meta device, which would clash with any CPU tensor, stands in for one here."""
    network = tiny_network(c_dim=2, **kwargs).to("meta")
    img, features = network(torch.randn(2, 16, device="meta"), torch.zeros(2, 2, device="meta"),
                            update_emas=True, return_features=True)
    assert img.device.type == "meta" and img.shape == (2, 3, 32, 32) and len(features) == 14


def test_emas_move_only_when_asked():
    network = tiny_network()
    layer = network.synthesis.L3_36_32
    before = (network.mapping.w_avg.clone(), layer.magnitude_ema.clone())
    with torch.no_grad():
        network(torch.randn(2, 16))
        assert torch.equal(network.mapping.w_avg, before[0]) and torch.equal(layer.magnitude_ema, before[1])
        network(torch.randn(2, 16), update_emas=True)
    assert not torch.equal(network.mapping.w_avg, before[0]) and not torch.equal(layer.magnitude_ema, before[1])


def test_init_kwargs_rebuild_the_network():
    network = tiny_network(c_dim=3, margin_size=6)
    kwargs = json.loads(json.dumps(network.init_kwargs))
    assert kwargs == dict(z_dim=16, c_dim=3, w_dim=16, img_resolution=32, img_channels=3,
                          mapping_kwargs={"num_layers": 2}, channel_base=512, channel_max=32, margin_size=6)
    rebuilt = StyleGAN3Generator(**kwargs)
    rebuilt.load_state_dict(network.state_dict(), strict=True)
    assert "mapping.embed.weight" in rebuilt.state_dict()


@pytest.mark.parametrize("kwargs, message", [
    (dict(img_resolution=48), "power of two"),
    (dict(num_layers=2, num_critical=2), "num_critical"),
])
def test_bad_config_is_one_line_error(kwargs, message):
    args = {**dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=3), **kwargs}
    with pytest.raises(DatasetGANError, match=message) as info:
        StyleGAN3Generator(**args)
    assert "\n" not in str(info.value)


# --- feature pyramid alignment -------------------------------------------------------------


def test_last_level_is_the_image_grid():
    """ToRGB is a 1x1 conv: applied pixel by pixel to the last level, it gives the image exactly."""
    network = tiny_network()
    generator = StyleGAN3(network, device="cpu")
    ws = generator.ws_from_seeds([11, 12])
    img, pyramid = generator.synthesize(ws)
    torgb = network.synthesis.layers()[-1]
    with torch.no_grad():
        rgb = torgb(pyramid[-1], ws[:, -1]) * network.synthesis.output_scale
    assert max_error(rgb.clamp(-1, 1), img) < 1e-6


def test_levels_are_centred_on_the_image():
    """With even Fourier features and point-symmetric kernels the network commutes with a 180-degree
    turn about each grid's centre: the image and every level stay unchanged by it, which a crop one
    sample off would break (checked below, so this test can fail)."""
    network = tiny_network()
    with torch.no_grad():
        network.synthesis.input.phases.fill_(0.25)  # sin(2 pi (f.x + 1/4)) = cos(2 pi f.x), even
        network.synthesis.input.affine.weight.zero_()  # no translation from w
        for layer in network.synthesis.layers():
            layer.weight.copy_((layer.weight + layer.weight.flip(2, 3)) / 2)
    generator = StyleGAN3(network, device="cpu")
    ws = generator.ws_from_seeds([3], psi=1)
    img, pyramid = generator.synthesize(ws)
    assert max_error(img, img.flip(2, 3)) < 1e-5
    with torch.no_grad():
        _, raw = network.synthesis(ws, return_features=True)
    for level, feature, full, margin in zip(generator.feature_layers, pyramid, raw, generator.margins):
        assert feature.shape[-2:] == (level.resolution, level.resolution)
        assert max_error(feature, feature.flip(2, 3)) < 1e-4 * feature.abs().max(), level.name
        if margin:
            off = full[:, :, margin + 1 : margin + 1 + level.resolution, margin + 1 : margin + 1 + level.resolution]
            assert max_error(off, off.flip(2, 3)) > 0.05 * feature.abs().max(), level.name


def test_translation_moves_every_level_with_the_image():
    """Moving the content by 1/16 of the image moves each level by rate/16 samples and the image by
    resolution/16 pixels: the best-matching shift of every level is exactly that, so the levels
    share the image's pitch (up to border effects, which the comparison's margin leaves out)."""
    network = tiny_network()
    generator = StyleGAN3(network, device="cpu")
    ws = generator.ws_from_seeds([5, 6], psi=1)
    img, pyramid = generator.synthesize(ws)
    with torch.no_grad():
        network.synthesis.input.transform[0, 2] = -1 / 16  # the inverse of moving the image right by 1/16
    img_moved, pyramid_moved = generator.synthesize(ws)

    def shift_errors(before: torch.Tensor, after: torch.Tensor, border: int) -> list[float]:
        """Max difference between `after` and `before` moved right by d samples, for d < border."""
        width = before.shape[-1]
        return [max_error(after[..., border:-border, border + d : width - border],
                          before[..., border:-border, border : width - border - d]) for d in range(border)]

    for before, after, level in zip([img, *pyramid], [img_moved, *pyramid_moved], [None, *generator.feature_layers]):
        rate = generator.resolution if level is None else level.resolution
        errors, expected = shift_errors(before, after, border=rate // 4), rate // 16
        assert int(np.argmin(errors)) == expected, (level, errors)
        assert errors[expected] < 0.25 * min(errors[expected - 1], errors[expected + 1]), (level, errors)


# --- Generator interface -------------------------------------------------------------------


def test_synthesize_is_deterministic_with_documented_pyramid():
    generator = StyleGAN3(tiny_network(), device="cpu")
    img, pyramid = generator.synthesize(generator.ws_from_seeds([42, 7]))
    img2, pyramid2 = generator.synthesize(generator.ws_from_seeds([42, 7]), noise_ids=[1, 2])  # no noise: ignored
    assert torch.equal(generator.to_uint8(img), generator.to_uint8(img2)) and torch.equal(img, img2)
    assert all(torch.equal(a, b) for a, b in zip(pyramid, pyramid2))
    assert img.shape == (2, 3, 32, 32) and img.dtype == torch.float32 and img.abs().max() <= 1
    assert [layer.name for layer in generator.feature_layers] == generator.network.synthesis.layer_names[:-1]
    assert generator.feature_resolutions == [16] * 5 + [32] * 9
    for f, c, r in zip(pyramid, generator.feature_channels, generator.feature_resolutions):
        assert f.shape == (2, c, r, r) and f.dtype == torch.float32


def test_seeds_follow_nvidia_convention(reference):
    network, _, _ = reference
    generator = StyleGAN3(network, device="cpu")
    z = torch.from_numpy(np.random.RandomState(42).randn(128)).float()[None]
    with torch.no_grad():
        expected = network.mapping(z, None, truncation_psi=0.7)
    assert torch.equal(generator.ws_from_seeds([42]), expected)


def test_unconditional_generator_refuses_classes():
    generator = StyleGAN3(tiny_network(), device="cpu")
    with pytest.raises(DatasetGANError, match="unconditional"):
        generator.ws_from_seeds([1], class_ids=[0])


def test_conditional_generator_draws_per_class():
    generator = StyleGAN3(tiny_network(c_dim=3), device="cpu")
    assert generator.c_dim == 3
    with pytest.raises(DatasetGANError, match="conditional on 3 classes"):
        generator.ws_from_seeds([1])
    ws = generator.ws_from_seeds([1, 1, 1], class_ids=[0, 1, 2])
    assert torch.equal(ws[1:2], generator.ws_from_seeds([1], class_ids=[1]))
    img, _ = generator.synthesize(ws)
    assert (img[0] - img[1]).abs().max() > 1e-3 and (img[1] - img[2]).abs().max() > 1e-3


def test_channel_groups_in_filtered_lrelu_change_nothing(monkeypatch):
    """At high resolution `filtered_lrelu` runs its channels in groups to bound memory: the same
    output up to float rounding (the depthwise convolutions pick other kernels for other widths)."""
    network = tiny_network()
    ws = network.mapping(torch.randn(2, 16), None)
    with torch.no_grad():
        whole = network.synthesis(ws, return_features=True)
        monkeypatch.setattr(stylegan3, "CHUNK_ELEMENTS", 3000)  # a few channels per group in every layer
        grouped = network.synthesis(ws, return_features=True)
    assert max_error(grouped[0], whole[0]) < 1e-5
    assert all(max_error(a, b) < 1e-5 for a, b in zip(grouped[1], whole[1]))
