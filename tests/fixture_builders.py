"""Generator files in other projects' layouts, written by our own code from a state dict.

No NVIDIA or rosinality code is used or needed. What is reproduced is the byte layout.

NVIDIA network pickle (stylegan2-ada-pytorch `training_loop.py`, stylegan3 repo alike)
    `pickle.dump(dict(training_set_kwargs=dict(...), G=G, D=D, G_ema=G_ema, augment_pipe=P))`,
    protocol 3 (Python 3.7) or 4 (3.8+). Every network object is an instance of a class wrapped
    by `torch_utils.persistence.persistent_class`, whose `__reduce__` yields

        REDUCE(GLOBAL torch_utils.persistence._reconstruct_persistent_obj, (meta,))
        meta = {"type": "class", "version": 6, "module_src": <source of the module, a str>,
                "class_name": "Generator" | "MappingNetwork" | ..., "state": <the object's __dict__>}

    with no BUILD. `state` is a torch.nn.Module `__dict__`: `training`, `_parameters`,
    `_buffers`, `_modules` (OrderedDicts; submodules are persistent objects in turn),
    `_non_persistent_buffers_set` (a set), the hook OrderedDicts, the attributes the
    class's `__init__` set (some are numpy float64, e.g. `act_gain = np.sqrt(2)`), and
    `_init_args` / `_init_kwargs` (the constructor arguments; `mapping_kwargs` and
    `synthesis_kwargs` are `dnnlib.util.EasyDict`, pickled as NEWOBJ + SETITEMS).
    Parameters are `torch._utils._rebuild_parameter(tensor, requires_grad, OrderedDict())`,
    tensors `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
    OrderedDict())`, and each storage `torch.storage._load_from_bytes(<legacy torch.save
    stream of the storage>)`. NVIDIA's unpickler `exec`s `module_src`.

    `NvidiaLayoutPickler` writes exactly that: `reducer_override` turns a `FakePersistent`
    (class name + state) into the reduce above. The pickler must find the globals it names,
    so `_fake_nvidia_modules()` registers stand-in modules `torch_utils.persistence` and
    `dnnlib.util` in `sys.modules` only while pickling. Tensors and parameters are pickled by
    torch itself, as NVIDIA's were. Our `module_src` writes a sentinel file if executed.

rosinality checkpoint (stylegan2-pytorch `train.py`)
    `torch.save({"g": ..., "d": ..., "g_ema": state_dict, "g_optim": ..., "d_optim": ...,
    "args": argparse.Namespace(...), "ada_aug_p": float})` (zip); `convert_weight.py` writes
    `{"g_ema": ..., "latent_avg": w_avg}`. `rosinality_state_dict` maps our (NVIDIA) names
    back to rosinality's; `rosinality_reference_*` evaluate such a state dict with
    rosinality's maths, written out independently of our network code.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import math
import pickle
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

PERSISTENCE_VERSION = 6


def sentinel_source(sentinel: Path) -> str:
    """A `module_src` that creates `sentinel` when executed (NVIDIA's loader would)."""
    return (
        "# stands in for training/networks.py; NVIDIA's unpickler runs this with exec()\n"
        f"open({str(sentinel)!r}, 'w').write('module_src was executed')\n"
    )


# ---------------------------------------------------------------------------------------------
# NVIDIA layout


class FakePersistent:
    """A network object as NVIDIA's persistence pickles it: class name and __dict__."""

    def __init__(self, class_name: str, state: dict[str, Any]):
        self.class_name = class_name
        self.state = state


def _reconstruct_persistent_obj(meta):  # only its name matters: it is pickled by reference
    raise RuntimeError("stand-in, never called")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    """Pickles like dnnlib.util.EasyDict: GLOBAL dnnlib.util EasyDict, NEWOBJ, SETITEMS."""


EasyDict.__module__ = "dnnlib.util"


@contextlib.contextmanager
def _fake_nvidia_modules():
    names = ["torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"]
    saved = {name: sys.modules.get(name) for name in names}
    modules = {name: types.ModuleType(name) for name in names}
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    modules["dnnlib.util"].EasyDict = EasyDict
    modules["torch_utils"].persistence = modules["torch_utils.persistence"]
    modules["dnnlib"].util = modules["dnnlib.util"]
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class NvidiaLayoutPickler(pickle.Pickler):
    def __init__(self, file, protocol: int, module_src: str):
        super().__init__(file, protocol=protocol)
        self.module_src = module_src

    def reducer_override(self, obj):
        if isinstance(obj, FakePersistent):
            meta = dict(type="class", version=PERSISTENCE_VERSION, module_src=self.module_src,
                        class_name=obj.class_name, state=obj.state)
            return _reconstruct_persistent_obj, (meta,)
        return NotImplemented


def dump_nvidia_pickle(data: dict[str, Any], path: Path, module_src: str, protocol: int = 3) -> Path:
    buffer = io.BytesIO()
    with _fake_nvidia_modules():
        NvidiaLayoutPickler(buffer, protocol, module_src).dump(data)
    raw = buffer.getvalue()
    if protocol < 4:  # Python 3.7-era files were written with numpy 1.x, which names its core module so
        raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(raw)
    return path


def module_state(params: dict, buffers: dict, modules: dict, **attributes) -> dict[str, Any]:
    """A torch.nn.Module __dict__ as pickled by NVIDIA's snapshots (eval mode, no grad)."""
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(
            (k, None if v is None else torch.nn.Parameter(v.detach().clone(), requires_grad=False))
            for k, v in params.items()
        ),
        "_buffers": collections.OrderedDict((k, None if v is None else v.detach().clone()) for k, v in buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": collections.OrderedDict(),
        "_forward_hooks": collections.OrderedDict(),
        "_forward_pre_hooks": collections.OrderedDict(),
        "_state_dict_hooks": collections.OrderedDict(),
        "_load_state_dict_pre_hooks": collections.OrderedDict(),
        "_modules": collections.OrderedDict(modules),
    }
    state.update(attributes)
    state["_init_args"] = ()
    state.setdefault("_init_kwargs", {})
    return state


_BUFFERS = {"w_avg", "resample_filter", "noise_const"}


def _class_of(path: str) -> str:
    rules = [
        (r"", "Generator"), (r"mapping", "MappingNetwork"), (r"mapping\.(fc\d+|embed)", "FullyConnectedLayer"),
        (r"synthesis", "SynthesisNetwork"), (r"synthesis\.b\d+", "SynthesisBlock"),
        (r"synthesis\.b\d+\.conv[01]", "SynthesisLayer"), (r"synthesis\.b\d+\.torgb", "ToRGBLayer"),
        (r".*\.affine", "FullyConnectedLayer"),
    ]
    for pattern, name in rules:
        if re.fullmatch(pattern, path):
            return name
    raise ValueError(path)


def _attributes(class_name: str, path: str, tensors: dict[str, torch.Tensor], conv_clamp, init: dict) -> dict:
    """What NVIDIA's constructors store besides tensors (representative, with their types)."""
    if class_name == "Generator":
        return {k: init[k] for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    if class_name == "MappingNetwork":
        return dict(z_dim=init["z_dim"], c_dim=init["c_dim"], w_dim=init["w_dim"],
                    num_layers=init["mapping_kwargs"].get("num_layers", 8), w_avg_beta=0.995)
    if class_name == "FullyConnectedLayer":
        lr = 0.01 if path.startswith("mapping.fc") else 1
        fan_in = tensors["weight"].shape[1]
        return dict(activation="lrelu" if path.startswith("mapping.fc") else "linear",
                    weight_gain=lr / np.sqrt(fan_in), bias_gain=lr)
    if class_name == "SynthesisNetwork":
        res = init["img_resolution"]
        return dict(w_dim=init["w_dim"], img_resolution=res, img_resolution_log2=int(np.log2(res)),
                    img_channels=init["img_channels"],
                    block_resolutions=[2**i for i in range(2, int(np.log2(res)) + 1)])
    if class_name == "SynthesisBlock":
        return dict(resolution=int(path.split(".b")[-1]), architecture="skip", use_fp16=False,
                    channels_last=False, is_last=False)
    if class_name == "SynthesisLayer":
        return dict(resolution=tensors["noise_const"].shape[0], up=2 if path.endswith("conv0") else 1,
                    use_noise=True, activation="lrelu", conv_clamp=conv_clamp, padding=1, act_gain=np.sqrt(2))
    if class_name == "ToRGBLayer":
        return dict(conv_clamp=conv_clamp, weight_gain=1 / np.sqrt(tensors["weight"].shape[1]))
    raise ValueError(class_name)


def generator_tree(state_dict: dict[str, torch.Tensor], init_kwargs: dict, layout: str = "ada") -> FakePersistent:
    """NVIDIA's object tree for a G / G_ema state dict in their names.

    layout "ada": stylegan2-ada-pytorch's `_init_kwargs` (synthesis_kwargs as one EasyDict).
    layout "sg3": the stylegan3 repository's StyleGAN2 (synthesis kwargs flattened into the
    Generator's, `fused_modconv_default`, conv_clamp left to the code's default and present
    only as the layers' attribute).
    layout "converted": the stylegan3 repository's legacy.py conversion of a TensorFlow
    StyleGAN2 (flattened, with every option spelled out: architecture, resample_filter, ...).
    """
    conv_clamp = (init_kwargs.get("synthesis_kwargs") or {}).get("conv_clamp")
    children: dict[str, dict] = collections.defaultdict(dict)
    for name, tensor in state_dict.items():
        parent, _, leaf = name.rpartition(".")
        children[parent][leaf] = tensor

    def build(path: str) -> FakePersistent:
        tensors = children.get(path, {})
        prefix = f"{path}." if path else ""
        sub_paths = sorted({k[len(prefix):].split(".")[0] for k in children if k.startswith(prefix) and k != path},
                           key=_natural)
        modules = {name: build(f"{prefix}{name}") for name in sub_paths if name}
        class_name = _class_of(path)
        params = {k: v for k, v in tensors.items() if k not in _BUFFERS}
        buffers = {k: v for k, v in tensors.items() if k in _BUFFERS}
        attrs = _attributes(class_name, path, tensors, conv_clamp, init_kwargs)
        if class_name == "Generator":
            attrs["_init_kwargs"] = _nvidia_init_kwargs(init_kwargs, layout)
        return FakePersistent(class_name, module_state(params, buffers, modules, **attrs))

    return build("")


def stylegan3_tree(network: torch.nn.Module) -> FakePersistent:
    """NVIDIA's object tree of a StyleGAN3 G_ema (the stylegan3 repository's `networks_stylegan3`),
    built from our network: our module classes carry NVIDIA's class names, the top one is
    `Generator`, and its `_init_kwargs` are flattened as the stylegan3 repository pickles them."""

    def build(module: torch.nn.Module, class_name: str) -> FakePersistent:
        modules = {name: build(child, type(child).__name__) for name, child in module.named_children()}
        attributes = {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"
                      and isinstance(v, (int, float, bool, list, tuple))}
        return FakePersistent(class_name, module_state(module._parameters, module._buffers, modules, **attributes))

    tree = build(network, "Generator")
    init = dict(network.init_kwargs)
    init["mapping_kwargs"] = EasyDict(init.get("mapping_kwargs") or {})
    tree.state["_init_kwargs"] = init
    return tree


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _nvidia_init_kwargs(init: dict, layout: str) -> dict:
    mapping = EasyDict(init.get("mapping_kwargs") or {})
    synthesis = EasyDict(init.get("synthesis_kwargs") or {})
    common = dict(z_dim=init["z_dim"], w_dim=init["w_dim"], mapping_kwargs=mapping, c_dim=init["c_dim"],
                  img_resolution=init["img_resolution"], img_channels=init["img_channels"])
    if layout == "ada":
        return dict(common, synthesis_kwargs=synthesis)
    if layout == "converted":  # what NVIDIA's legacy.py records for a converted TensorFlow StyleGAN2
        common["mapping_kwargs"] = EasyDict(dict(embed_features=None, layer_features=None, activation="lrelu",
                                                 lr_multiplier=0.01, w_avg_beta=0.995), **mapping)
        return dict(common, num_fp16_res=0, conv_clamp=None, architecture="skip", resample_filter=[1, 3, 3, 1],
                    use_noise=True, activation="lrelu", **synthesis)
    flattened = {k: v for k, v in synthesis.items() if k != "conv_clamp"}
    return dict(common, fused_modconv_default="inference_only", **flattened)


def small_discriminator() -> FakePersistent:
    torch.manual_seed(1)
    fromrgb = FakePersistent("Conv2dLayer", module_state(
        {"weight": torch.randn(8, 3, 1, 1), "bias": torch.zeros(8)},
        {"resample_filter": torch.ones(4, 4) / 16}, {}, activation="lrelu", act_gain=np.sqrt(2)))
    return FakePersistent("Discriminator", module_state({}, {}, {"b16": FakePersistent(
        "DiscriminatorBlock", module_state({}, {}, {"fromrgb": fromrgb}, architecture="resnet"))}))


def augment_pipe() -> FakePersistent:
    return FakePersistent("AugmentPipe", module_state(
        {}, {"p": torch.tensor(0.2), "Hz_geom": torch.randn(12)}, {}, xflip=1.0, rotate90=1.0,
        imgfilter_bands=[1, 1, 1, 1], imgfilter_std=np.ones(4, dtype=np.float32),
        _init_kwargs={"xflip": 1, "rotate90": 1}))


def nvidia_snapshot(g_ema: FakePersistent, g: FakePersistent | None = None, resolution: int = 64) -> dict:
    """The dict NVIDIA's training loop pickles, in its key order."""
    data = dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="~/ffhq.zip",
                                         use_labels=False, max_size=70000, xflip=False, resolution=resolution))
    data.update(G=g if g is not None else g_ema, D=small_discriminator(), G_ema=g_ema, augment_pipe=augment_pipe())
    return data


class Reduce:
    """Pickles as REDUCE(fn, args): how a malicious pickle calls something on load."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


# ---------------------------------------------------------------------------------------------
# rosinality layout


def rosinality_state_dict(state: dict[str, torch.Tensor], resolution: int) -> dict[str, torch.Tensor]:
    """Our (NVIDIA-named) G state dict in rosinality's names and shapes."""
    out: dict[str, torch.Tensor] = {}
    i = 0
    while f"mapping.fc{i}.weight" in state:
        out[f"style.{i + 1}.weight"] = state[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = state[f"mapping.fc{i}.bias"]
        i += 1
    out["input.input"] = state["synthesis.b4.const"].unsqueeze(0)
    kernel = torch.tensor([1.0, 3, 3, 1])
    kernel = torch.outer(kernel, kernel)
    kernel = kernel / kernel.sum() * 4
    blocks = [2**k for k in range(3, int(math.log2(resolution)) + 1)]
    layers = [("conv1", "synthesis.b4.conv1")]
    for k, res in enumerate(blocks):
        layers += [(f"convs.{2 * k}", f"synthesis.b{res}.conv0"), (f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1")]
        out[f"convs.{2 * k}.conv.blur.kernel"] = kernel.clone()
    for j, (dst, src) in enumerate(layers):
        out[f"{dst}.conv.weight"] = state[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = state[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = state[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = state[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = state[f"{src}.bias"]
        out[f"noises.noise_{j}"] = state[f"{src}.noise_const"].reshape(1, 1, *state[f"{src}.noise_const"].shape)
    torgbs = [("to_rgb1", "synthesis.b4.torgb")]
    torgbs += [(f"to_rgbs.{k}", f"synthesis.b{r}.torgb") for k, r in enumerate(blocks)]
    for k, (dst, src) in enumerate(torgbs):
        out[f"{dst}.conv.weight"] = state[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = state[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = state[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = state[f"{src}.bias"].reshape(1, -1, 1, 1)
        if k:
            out[f"{dst}.upsample.kernel"] = kernel.clone()
    return {k: v.detach().clone() for k, v in out.items()}


def save_rosinality_checkpoint(path: Path, sd: dict, args: argparse.Namespace, latent_avg: torch.Tensor | None) -> Path:
    """As train.py saves (plus latent_avg when given, as convert_weight.py does)."""
    ckpt = {"g": sd, "d": {"convs.0.0.weight": torch.randn(4, 3, 1, 1)}, "g_ema": sd,
            "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "params": [0]}]},
            "d_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "params": [0]}]},
            "args": args, "ada_aug_p": 0.0}
    if latent_avg is not None:
        ckpt["latent_avg"] = latent_avg
    torch.save(ckpt, path)
    return path


def _upfirdn(x: torch.Tensor, kernel: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    """Explicit zero insertion, padding, true convolution: upfirdn2d written the long way."""
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h, up, w, up)
        z[:, :, :, 0, :, 0] = x
        x = z.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = torch.flip(kernel, [0, 1]).reshape(1, 1, *kernel.shape).repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def rosinality_reference_mapping(sd: dict, z: torch.Tensor, lr_mul: float = 0.01) -> torch.Tensor:
    x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    i = 1
    while f"style.{i}.weight" in sd:
        weight, bias = sd[f"style.{i}.weight"], sd[f"style.{i}.bias"]
        x = F.linear(x, weight * (lr_mul / math.sqrt(weight.shape[1])))
        x = F.leaky_relu(x + bias * lr_mul, 0.2) * math.sqrt(2)
        i += 1
    return x


def rosinality_reference_synthesis(sd: dict, ws: torch.Tensor) -> torch.Tensor:
    """rosinality's Generator.forward(input_is_latent, randomize_noise=False) maths, per sample."""

    def modconv(x, prefix, w, demodulate=True, up=False):
        weight = sd[f"{prefix}.conv.weight"]  # [1, O, I, k, k]
        _, out_c, in_c, k, _ = weight.shape
        mod_w, mod_b = sd[f"{prefix}.conv.modulation.weight"], sd[f"{prefix}.conv.modulation.bias"]
        style = F.linear(w, mod_w / math.sqrt(mod_w.shape[1]), mod_b)  # EqualLinear, lr 1
        outs = []
        for n in range(x.shape[0]):
            wn = weight[0] / math.sqrt(in_c * k * k) * style[n].reshape(1, in_c, 1, 1)
            if demodulate:
                wn = wn * torch.rsqrt(wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
            xn = x[n : n + 1]
            if up:
                y = F.conv_transpose2d(xn, wn.transpose(0, 1), stride=2)
                y = _upfirdn(y, sd[f"{prefix}.conv.blur.kernel"], 1, (1, 1))
            else:
                y = F.conv2d(xn, wn, padding=k // 2)
            outs.append(y)
        return torch.cat(outs)

    def styled(x, prefix, w, noise, up=False):
        x = modconv(x, prefix, w, up=up)
        x = x + sd[f"{prefix}.noise.weight"] * noise
        return F.leaky_relu(x + sd[f"{prefix}.activate.bias"].reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)

    def to_rgb(x, prefix, w, skip):
        out = modconv(x, prefix, w, demodulate=False) + sd[f"{prefix}.bias"]
        if skip is not None:
            out = out + _upfirdn(skip, sd[f"{prefix}.upsample.kernel"], 2, (2, 1))
        return out

    x = sd["input.input"].repeat(ws.shape[0], 1, 1, 1)
    x = styled(x, "conv1", ws[:, 0], sd["noises.noise_0"])
    skip = to_rgb(x, "to_rgb1", ws[:, 1], None)
    k, i = 0, 1
    while f"convs.{2 * k}.conv.weight" in sd:
        x = styled(x, f"convs.{2 * k}", ws[:, i], sd[f"noises.noise_{2 * k + 1}"], up=True)
        x = styled(x, f"convs.{2 * k + 1}", ws[:, i + 1], sd[f"noises.noise_{2 * k + 2}"])
        skip = to_rgb(x, f"to_rgbs.{k}", ws[:, i + 2], skip)
        k, i = k + 1, i + 2
    return skip


def legacy_storage_bytes(obj: Any) -> bytes:
    """What torch.storage._load_from_bytes receives: a legacy (non-zip) torch.save stream."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()
