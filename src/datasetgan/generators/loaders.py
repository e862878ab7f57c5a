"""Bring your own generator: read generator files from other projects without running their code.

`load_network_file(path)` recognises a file by its content (the suffix is only a hint) and
returns our network of its architecture on the CPU in eval mode:

- our safetensors format (`checkpoint.save_generator`), any architecture;
- NVIDIA network pickles: StyleGAN2 from stylegan2-ada-pytorch and the stylegan3 repository
  (`network-snapshot-*.pkl`, `stylegan2-*.pkl`), and StyleGAN3 T and R from the stylegan3
  repository (`stylegan3-t-*.pkl`, `stylegan3-r-*.pkl`), class-conditional ones included;
- rosinality/stylegan2-pytorch checkpoints (`torch.save` of a dict holding `g_ema`, and
  `latent_avg` or `args`), or a bare `g_ema` state dict;
- the official DatasetGAN release's StyleGAN1 (`*.for_g_all.pt`, a state dict of its `g_all`)
  with its average latent (`avg_latent_stylegan1.npy`).

Every NVIDIA pickle names its network class `Generator`; StyleGAN2 and StyleGAN3 are told
apart by the classes and names of the synthesis network's children (`_is_stylegan3`), never
by the pickled source.

NVIDIA pickles are hostile-by-design for a plain unpickler: each network is stored through
`torch_utils.persistence` as a reduce to `_reconstruct_persistent_obj(meta)`, where
`meta["module_src"]` is the source code of the network's Python module, which NVIDIA's loader
runs with `exec`. Loading an untrusted `.pkl` with `pickle.load` therefore runs whatever the
file's author wrote. Here the pickle is read by `_RestrictedUnpickler`, whose `find_class`
hands out only the callables in `_ALLOWED_GLOBALS` (containers, our own tensor and storage
rebuilders, numpy scalars, a stand-in for `_reconstruct_persistent_obj` that returns a plain
`_PersistentObject` and never looks at `module_src`); any other global ends the load with a
`DatasetGANError` naming it. Tensor storages inside such pickles are small legacy `torch.save`
streams (`torch.storage._load_from_bytes`); they are read with `torch.load(weights_only=True)`.
Rosinality checkpoints are zip files and are read with `torch.load(weights_only=True)`, with
`argparse.Namespace` (their `args` entry) as the only extra type allowed.

From NVIDIA's tree we take `G_ema` (else `G`): its constructor arguments (`_init_kwargs`, as
pickled) and its parameters and buffers, flattened under NVIDIA's names, which are ours.
Rosinality's names map one to one onto NVIDIA's and their maths agree (see
`_rosinality_state`); the one residual difference is where the 1e-8 of the demodulation enters
(rosinality scales the weight by 1/sqrt(fan_in) before demodulating, NVIDIA does not), a
relative change of about 1e-8 / (fan_in * mean style^2), far below float32 noise for real
networks.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from datasetgan.errors import DatasetGANError
from datasetgan.generators.checkpoint import Network, load_network, save_generator
from datasetgan.generators.stylegan1 import StyleGAN1Generator, read_avg_latent, release_network
from datasetgan.generators.stylegan2 import StyleGAN2Generator, setup_filter
from datasetgan.generators.stylegan3 import StyleGAN3Generator

SUPPORTED = (
    "our .safetensors generator files, NVIDIA network pickles (.pkl) of StyleGAN2 and StyleGAN3 from "
    "stylegan2-ada-pytorch or the stylegan3 repository, rosinality/stylegan2-pytorch checkpoints (.pt) "
    "and the DatasetGAN release's StyleGAN1 (*.for_g_all.pt)"
)
ARCHITECTURE = "StyleGAN2 (config F: skip generator, [1,3,3,1] resampling filter)"
ARCHITECTURES: dict[type, str] = {
    StyleGAN2Generator: ARCHITECTURE,
    StyleGAN3Generator: "StyleGAN3 (alias-free, config T or R)",
    StyleGAN1Generator: "StyleGAN1 (the official DatasetGAN release's g_all)",
}

# torch.save's legacy (non-zip) stream starts with a protocol-2 pickle of this magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_ZIP_MAGIC = b"PK\x03\x04"
RELEASE_AVG_LATENT = "avg_latent_stylegan1.npy"  # the DatasetGAN release's truncation centre for its StyleGAN1
_DEFAULT_FILTER = (1, 3, 3, 1)
_MAX_TREE_NODES = 100_000  # a shared-subtree pickle must not make flattening explode
_W_AVG_SAMPLES = 4096  # rosinality's own default for its truncation mean (generate.py)


# ---------------------------------------------------------------------------------------------
# Entry points


def detect_format(path: str | Path) -> str:
    """'safetensors', 'nvidia-pickle' or 'torch' from the first bytes of the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetGANError(f"no generator file at {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "nvidia-pickle"
    raise DatasetGANError(f"{path} is not a recognised generator file: datasetgan reads {SUPPORTED}")


def load_network_file(path: str | Path, avg_latent: str | Path | None = None) -> Network:
    """Any supported generator file -> our network on the CPU, in eval mode. Never runs its code.
    `avg_latent`: the average latent of a DatasetGAN release StyleGAN1 (`*.for_g_all.pt`)."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "torch":
        return load_torch_checkpoint(path, avg_latent)
    if avg_latent is not None:
        raise DatasetGANError(f"{path} is not the DatasetGAN release's StyleGAN1: drop --avg-latent")
    return load_network(path) if kind == "safetensors" else load_nvidia_pickle(path)


def convert(src: str | Path, out: str | Path, avg_latent: str | Path | None = None) -> Network:
    """Read any supported generator file (with the release StyleGAN1's average latent, if that is
    what it is) and write it in our safetensors format."""
    network = load_network_file(src, avg_latent)
    save_generator(network, out)
    return network


# ---------------------------------------------------------------------------------------------
# NVIDIA pickles: the restricted unpickler


class _PersistentObject:
    """What a `torch_utils.persistence` object becomes here: its class name and `__dict__`."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict):
        self.class_name = class_name
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.class_name} from an NVIDIA pickle>"


def _reconstruct_persistent_obj(meta: Any) -> _PersistentObject:
    """Stand-in for NVIDIA's: keeps class name and state, ignores (never runs) `module_src`."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise DatasetGANError("malformed persistent object in the pickle (expected meta with type 'class')")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise DatasetGANError("malformed persistent object in the pickle (class_name or state missing)")
    return _PersistentObject(class_name, dict(state))


class _EasyDict(dict):
    """`dnnlib.util.EasyDict` read as a plain dict (pickled as NEWOBJ, SETITEMS, maybe BUILD)."""

    def __setstate__(self, state: Any) -> None:  # an EasyDict keeps everything in its items
        pass


def _load_storage_from_bytes(data: Any) -> Any:
    """`torch.storage._load_from_bytes`, but the inner legacy stream is read weights-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise DatasetGANError("malformed tensor storage in the pickle (expected bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        try:
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise _refusal("a tensor storage inside the pickle", _global_in_torch_error(exc)) from None
        except Exception as exc:
            raise DatasetGANError(f"unreadable tensor storage in the pickle: {exc}") from None
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise DatasetGANError(f"malformed tensor storage in the pickle (got {type(storage).__name__})")
    return storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2` with checked arguments; hooks and grad flags dropped."""
    if not isinstance(storage, torch.TypedStorage):
        raise DatasetGANError("malformed tensor in the pickle (its storage is not a typed storage)")
    ints = [storage_offset, *size, *stride]
    if not all(isinstance(v, int) and v >= 0 for v in ints) or len(size) != len(stride):
        raise DatasetGANError("malformed tensor in the pickle (bad offset, size or stride)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))
    except RuntimeError as exc:  # e.g. a view past the end of its storage
        raise DatasetGANError(f"malformed tensor in the pickle: {exc}") from None


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise DatasetGANError("malformed parameter in the pickle (its data is not a tensor)")
    return data


def _numpy_scalar(dtype, data=None):
    """numpy scalars (NVIDIA stores gains as np.float64): plain-data dtypes only, as Python numbers."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise DatasetGANError("refusing a numpy scalar that is not plain data")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


def _latin1_encode(text, encoding="utf-8"):
    """`_codecs.encode` as protocol-2 pickles use it for bytes; only latin-1 is accepted."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DatasetGANError("refusing _codecs.encode other than latin-1 text")
    return text.encode("latin-1")


class _NdarrayType:
    """What `numpy.ndarray` resolves to: a marker for `_reconstruct`, not a callable constructor."""


def _numpy_reconstruct(subtype, shape, dtype):
    """numpy's array unpickling entry (the data comes next, through ndarray.__setstate__)."""
    if subtype is not _NdarrayType:
        raise DatasetGANError("refusing a numpy array of a type other than ndarray")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("_codecs", "encode"): _latin1_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
}


def _refusal(where: str, name: str) -> DatasetGANError:
    hint = ""
    if name.startswith("dnnlib.tflib"):
        hint = " This is a TensorFlow StyleGAN pickle; only PyTorch pickles are supported."
    return DatasetGANError(
        f"refusing to load {where}: it references the global {name}, which is not on datasetgan's "
        f"allow-list of plain data types (a pickle can run arbitrary code through such references).{hint}"
    )


def _global_in_torch_error(exc: Exception) -> str:
    """The offending global from torch's weights-only error ('GLOBAL posix.system ...')."""
    match = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return match.group(1) if match else f"<unknown> ({str(exc).strip().splitlines()[-1] if str(exc).strip() else exc})"


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str):
        super().__init__(file)
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _refusal(self._where, f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetGANError(
            f"refusing to load {self._where}: it uses pickle persistent ids, which NVIDIA pickles do not"
        )


def _unpickle(path: Path) -> Any:
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, str(path)).load()
        except DatasetGANError as exc:
            if str(path) in str(exc):
                raise
            raise DatasetGANError(f"{path}: {exc}") from None
        except RecursionError:
            raise DatasetGANError(f"{path}: the pickle nests too deeply to be a network") from None
        except Exception as exc:  # UnpicklingError, EOFError, TypeError from a malformed stream...
            raise DatasetGANError(f"{path} is not a readable pickle: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# NVIDIA pickles: from the tree to our network


def load_nvidia_pickle(path: str | Path) -> StyleGAN2Generator:
    """G_ema (else G) of a stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 pickle."""
    path = Path(path)
    data = _unpickle(path)
    try:
        return _nvidia_network(path, data)
    except (TypeError, AttributeError, ValueError, KeyError, RecursionError) as exc:  # odd types in the tree
        raise DatasetGANError(f"{path}: malformed NVIDIA network pickle: {type(exc).__name__}: {exc}") from None


def _nvidia_network(path: Path, data: Any) -> StyleGAN2Generator:
    if not isinstance(data, dict):
        raise DatasetGANError(f"{path} is a pickle but not an NVIDIA network pickle (expected a dict with G_ema)")
    key = "G_ema" if data.get("G_ema") is not None else "G"
    g = data.get(key)
    if not isinstance(g, _PersistentObject):
        raise DatasetGANError(
            f"{path} holds no generator network (no G_ema or G entry): expected an NVIDIA network pickle"
        )
    if g.class_name != "Generator":
        raise DatasetGANError(f"{path}: {key} is a {g.class_name}, not a Generator")
    synthesis = _child(g, "synthesis")
    if _is_stylegan3(synthesis):
        kwargs, mapping, synthesis_kwargs = _generator_args(path, g)
        return _build(path, StyleGAN3Generator, dict(kwargs, mapping_kwargs=mapping, **synthesis_kwargs), _flatten(g))
    _check_architecture(path, synthesis)
    init_kwargs = _nvidia_init_kwargs(path, g, synthesis)
    return _build(path, StyleGAN2Generator, init_kwargs, _flatten(g))


def _is_stylegan3(synthesis: _PersistentObject) -> bool:
    """The stylegan3 repository's alias-free synthesis: a Fourier-feature `input` and layers L{i}_{size}_{channels}.

    NVIDIA pickles name every network class `Generator`, whatever its module; the synthesis
    network's children tell the architectures apart without reading the pickled source.
    """
    children = synthesis.state.get("_modules") or {}
    sg3 = isinstance(children.get("input"), _PersistentObject) and children["input"].class_name == "SynthesisInput"
    return sg3 and all(name == "input" or re.fullmatch(r"L\d+_\d+_\d+", name) for name in children)


def _child(obj: _PersistentObject, name: str) -> _PersistentObject:
    child = (obj.state.get("_modules") or {}).get(name)
    if not isinstance(child, _PersistentObject):
        raise DatasetGANError(f"the generator has no {name} network object: not a StyleGAN2 generator")
    return child


def _check_architecture(path: Path, synthesis: _PersistentObject) -> None:
    children = dict(synthesis.state.get("_modules") or {})
    for name, block in children.items():
        if not re.fullmatch(r"b\d+", name) or not isinstance(block, _PersistentObject):
            kind = block.class_name if isinstance(block, _PersistentObject) else type(block).__name__
            raise DatasetGANError(f"{path}: unknown generator architecture: its synthesis network holds {name!r} "
                                  f"of class {kind}; datasetgan loads {', '.join(ARCHITECTURES.values())}")
        architecture = block.state.get("architecture", "skip")
        if architecture != "skip":
            raise DatasetGANError(
                f"{path}: the generator uses the {architecture!r} architecture; datasetgan loads {ARCHITECTURE}"
            )


_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_SYNTHESIS_KEYS = {
    "channel_base", "channel_max", "num_fp16_res", "conv_clamp", "resample_filter", "use_noise", "kernel_size",
}
_RUNTIME_ONLY = {"fp16_channels_last", "fused_modconv_default"}  # speed and memory layout, not maths


def _nvidia_init_kwargs(path: Path, g: _PersistentObject, synthesis: _PersistentObject) -> dict[str, Any]:
    """NVIDIA's constructor arguments, normalised to ours.

    stylegan2-ada-pytorch pickles `synthesis_kwargs` as one argument; the stylegan3 repo's
    StyleGAN2 takes them flattened (`**synthesis_kwargs`). Values its code took from defaults
    that differ from ours (stylegan3 repo: conv_clamp 256, w_avg_beta 0.998) are read from the
    built layers' attributes, which record what the network actually used.
    """
    kwargs, mapping, raw = _generator_args(path, g)
    synthesis_kwargs = dict(raw.pop("synthesis_kwargs", None) or {})
    synthesis_kwargs.update(raw)  # the stylegan3 repository's flattened form

    architecture = synthesis_kwargs.pop("architecture", "skip")
    if architecture != "skip":
        raise DatasetGANError(
            f"{path}: the generator uses the {architecture!r} architecture; datasetgan loads {ARCHITECTURE}"
        )
    for name in _RUNTIME_ONLY:
        synthesis_kwargs.pop(name, None)
    activations = {
        "mapping": mapping.get("activation", "lrelu"),
        "synthesis": synthesis_kwargs.pop("activation", "lrelu"),
    }
    for where, value in activations.items():
        if value not in ("lrelu", "linear"):
            raise DatasetGANError(f"{path}: unsupported {where} activation {value!r}; datasetgan loads {ARCHITECTURE}")
    unknown = sorted(set(mapping) - _MAPPING_KEYS) + sorted(set(synthesis_kwargs) - _SYNTHESIS_KEYS)
    if unknown:
        raise DatasetGANError(f"{path}: unsupported generator options {unknown}; datasetgan loads {ARCHITECTURE}")

    # Values the source code took from its own defaults: read what the layers recorded.
    mapping_net = _child(g, "mapping")
    runtime = {
        "num_layers": (mapping_net.state.get("num_layers"), 8),
        "w_avg_beta": (mapping_net.state.get("w_avg_beta"), 0.995),
    }
    fc0 = (mapping_net.state.get("_modules") or {}).get("fc0")
    if isinstance(fc0, _PersistentObject):
        runtime["lr_multiplier"] = (fc0.state.get("bias_gain"), 0.01)
    for name, (value, ours) in runtime.items():
        if name not in mapping and isinstance(value, (int, float)) and not math.isclose(value, ours):
            mapping[name] = value
    first_block = _child(synthesis, "b4")
    first_layer = (first_block.state.get("_modules") or {}).get("conv1")
    if "conv_clamp" not in synthesis_kwargs and isinstance(first_layer, _PersistentObject):
        clamp = first_layer.state.get("conv_clamp")
        if isinstance(clamp, (int, float)) and not isinstance(clamp, bool):
            synthesis_kwargs["conv_clamp"] = clamp
    if tuple(synthesis_kwargs.get("resample_filter", _DEFAULT_FILTER)) != _DEFAULT_FILTER:
        raise DatasetGANError(f"{path}: unsupported resample_filter {synthesis_kwargs['resample_filter']}; "
                              f"datasetgan loads {ARCHITECTURE}")
    kwargs["mapping_kwargs"] = mapping
    kwargs["synthesis_kwargs"] = synthesis_kwargs
    return kwargs


def _generator_args(path: Path, g: _PersistentObject) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The Generator's five integer arguments, its mapping kwargs, and the rest of its init kwargs."""
    raw = _plain(g.state.get("_init_kwargs") or {}, "init kwargs")
    for name, value in zip(_GENERATOR_ARGS, _plain(list(g.state.get("_init_args") or ()), "init args")):
        raw.setdefault(name, value)
    kwargs: dict[str, Any] = {}
    for name in _GENERATOR_ARGS[:5]:
        value = raw.pop(name, g.state.get(name))
        if not isinstance(value, int) or isinstance(value, bool):
            raise DatasetGANError(f"{path}: the generator's {name} is {value!r}, expected an integer")
        kwargs[name] = value
    return kwargs, dict(raw.pop("mapping_kwargs", None) or {}), raw


def _plain(value: Any, what: str, depth: int = 0) -> Any:
    """Constructor arguments as JSON-able Python data (EasyDicts to dicts, tuples to lists)."""
    if depth > 16:
        raise DatasetGANError(f"the generator's {what} nest too deeply")
    if isinstance(value, dict):
        return {str(k): _plain(v, what, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, what, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise DatasetGANError(f"unsupported value of type {type(value).__name__} in the generator's {what}")


def _flatten(root: _PersistentObject) -> dict[str, torch.Tensor]:
    """`_parameters`, `_buffers` (persistent ones) and `_modules`, recursively, as a state dict."""
    state: dict[str, torch.Tensor] = {}
    stack = [("", root)]
    visited = 0
    while stack:
        prefix, obj = stack.pop()
        visited += 1
        if visited > _MAX_TREE_NODES:
            raise DatasetGANError("the generator has too many sub-networks to be a StyleGAN2")
        st = obj.state
        skip = set(st.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, tensor in (st.get(group) or {}).items():
                if tensor is None or (group == "_buffers" and name in skip):
                    continue
                if not isinstance(tensor, torch.Tensor):
                    raise DatasetGANError(f"{prefix}{name} in the pickle is a {type(tensor).__name__}, not a tensor")
                state[f"{prefix}{name}"] = tensor
        for name, child in (st.get("_modules") or {}).items():
            if child is None:
                continue
            if not isinstance(child, _PersistentObject):
                raise DatasetGANError(f"{prefix}{name} in the pickle is a {type(child).__name__}, not a network object")
            stack.append((f"{prefix}{name}.", child))
    return state


def _build(path: Path, cls: type[Network], init_kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> Network:
    """`cls(**init_kwargs)` holding `state`, which must fit it exactly (else one line naming what does not)."""
    architecture = ARCHITECTURES[cls]
    try:
        network = cls(**init_kwargs)
    except (TypeError, ValueError) as exc:
        raise DatasetGANError(f"{path}: cannot build a {architecture} from its arguments {init_kwargs}: {exc}") from None
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        def few(names):
            return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        problems = [f"{label}: {few(names)}" for label, names in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names]
        raise DatasetGANError(
            f"{path}: weights do not fit {architecture} with arguments {init_kwargs} ({'; '.join(problems)})"
        )
    network.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return network.eval()


# ---------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch checkpoints


@contextlib.contextmanager
def _allow_namespace():
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:
        raise DatasetGANError(
            "reading rosinality checkpoints safely needs torch >= 2.5 (torch.serialization.safe_globals)"
        )
    with safe_globals([argparse.Namespace]):
        yield


def load_torch_checkpoint(path: str | Path, avg_latent: str | Path | None = None) -> Network:
    """A `torch.save`d generator, read weights-only: a rosinality checkpoint, or the DatasetGAN
    release's StyleGAN1 g_all state dict (`*.for_g_all.pt`) with its average latent (`avg_latent`,
    else `avg_latent_stylegan1.npy` beside the file)."""
    path = Path(path)
    with _allow_namespace(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise _refusal(str(path), _global_in_torch_error(exc)) from None
        except Exception as exc:
            raise DatasetGANError(f"{path} is not a readable torch checkpoint: {type(exc).__name__}: {exc}") from None
    if not isinstance(ckpt, dict):
        raise DatasetGANError(f"{path} holds a {type(ckpt).__name__}, not a generator checkpoint dict")
    if any(isinstance(k, str) and k.startswith("g_mapping.") for k in ckpt):
        return _release_stylegan1(path, ckpt, avg_latent)
    if avg_latent is not None:
        raise DatasetGANError(f"{path} is not the DatasetGAN release's StyleGAN1: drop --avg-latent")
    return _rosinality_network(path, ckpt)


def _release_stylegan1(path: Path, state: dict, avg_latent: str | Path | None) -> StyleGAN1Generator:
    avg_path = Path(avg_latent) if avg_latent is not None else path.parent / RELEASE_AVG_LATENT
    if avg_latent is None and not avg_path.is_file():
        raise DatasetGANError(
            f"{path} is the DatasetGAN release's StyleGAN1, which needs its average latent: put "
            f"{RELEASE_AVG_LATENT} beside it, or convert once with `datasetgan generator convert {path.name} "
            f"OUT.safetensors --avg-latent PATH`"
        )
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DatasetGANError(f"{path} holds non-tensor entries: not a g_all state dict")
    return release_network(path, state, read_avg_latent(avg_path))


def _rosinality_network(path: Path, ckpt: dict) -> StyleGAN2Generator:
    """`g_ema` of a rosinality checkpoint (train.py's or convert_weight.py's), or a bare state dict."""
    if "g_ema" in ckpt or "g" in ckpt:
        sd = ckpt.get("g_ema", ckpt.get("g"))
        latent_avg, args = ckpt.get("latent_avg"), ckpt.get("args")
    elif "style.1.weight" in ckpt:
        sd, latent_avg, args = ckpt, None, None
    else:
        raise DatasetGANError(
            f"{path} is a torch checkpoint without a g_ema entry: datasetgan reads {SUPPORTED}"
        )
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DatasetGANError(f"{path}: g_ema is not a state dict of tensors")
    args = vars(args) if isinstance(args, argparse.Namespace) else (args if isinstance(args, dict) else {})
    if args.get("arch", "stylegan2") != "stylegan2":
        raise DatasetGANError(
            f"{path}: rosinality arch {args['arch']!r} is not supported; datasetgan loads {ARCHITECTURE}"
        )
    try:
        init_kwargs, state = _rosinality_state(path, dict(sd), args)
    except (TypeError, AttributeError, ValueError, KeyError) as exc:  # shapes or types rosinality never writes
        raise DatasetGANError(f"{path}: malformed rosinality checkpoint: {type(exc).__name__}: {exc}") from None
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != init_kwargs["w_dim"]:
            raise DatasetGANError(f"{path}: latent_avg does not have w_dim = {init_kwargs['w_dim']} values")
        state["mapping.w_avg"] = latent_avg.reshape(-1)
    network = StyleGAN2Generator(**init_kwargs)
    state.update({k: v for k, v in network.state_dict().items() if k.endswith("resample_filter")})
    if latent_avg is None:
        state["mapping.w_avg"] = torch.zeros(init_kwargs["w_dim"])
    network = _build(path, StyleGAN2Generator, init_kwargs, state)
    if latent_avg is None:
        network.mapping.w_avg.copy_(estimate_w_avg(network))
    return network


@torch.no_grad()
def estimate_w_avg(network: StyleGAN2Generator, samples: int = _W_AVG_SAMPLES, seed: int = 0) -> torch.Tensor:
    """Mean w over `samples` fixed z: the truncation centre when a checkpoint has no latent_avg."""
    z = torch.randn(samples, network.z_dim, generator=torch.Generator().manual_seed(seed))
    total = torch.zeros(network.w_dim, dtype=torch.float64)
    for chunk in z.split(1024):
        total += network.mapping(chunk)[:, 0].sum(dim=0, dtype=torch.float64)
    return (total / samples).to(torch.float32)


def _rosinality_state(path: Path, sd: dict[str, torch.Tensor], args: dict[str, Any]):
    """Rosinality's g_ema names and shapes -> NVIDIA's, with the init kwargs they imply.

    Maths, checked layer by layer against rosinality's model.py:
    - `style.{i+1}` (EqualLinear, lr_mul 0.01, fused leaky ReLU) = `mapping.fc{i}`: both store
      the weight at N(0, 1/lr^2) and scale it by lr/sqrt(fan_in) and the bias by lr at runtime,
      so the tensors are copied as they are. PixelNorm = normalize_2nd_moment (eps 1e-8).
    - `conv.modulation` = `affine` (bias initialised to 1 in both; lr 1).
    - `conv.weight` [1, O, I, k, k] = `weight` [O, I, k, k]; rosinality's extra 1/sqrt(I k k)
      cancels in the demodulation (except for where eps enters, see the module docstring)
      and equals ToRGB's `weight_gain` on the styles where there is no demodulation.
    - upsampling conv: transposed conv (stride 2, weight not flipped) then the [1,3,3,1] blur
      times 4 with pad (1, 1) in both; torgb skip: upfirdn2d up 2, pad (2, 1), gain 4 in both.
    - `noise.weight` [1] = `noise_strength` [], `noises.noise_{j}` [1,1,R,R] = `noise_const` of
      conv layer j in forward order; noise is added after demodulation, before the bias.
    - `activate.bias` (FusedLeakyReLU: + bias unscaled, slope 0.2, gain sqrt 2) = `bias`.
    - `to_rgb1`/`to_rgbs.{k}` = `b4.torgb`/`b{8*2^k}.torgb`; `bias` [1,3,1,1] -> [3].
    - the w slots are used in the same order (conv, conv, torgb sharing the next conv's slot).
    """
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in sd:
            raise DatasetGANError(f"{path}: g_ema has no {name}: not a rosinality StyleGAN2 generator")
        used.add(name)
        return sd[name]

    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in sd:
        n_mlp += 1
    n_convs = 0
    while f"convs.{n_convs}.conv.weight" in sd:
        n_convs += 1
    if n_mlp == 0 or "input.input" not in sd or n_convs % 2:
        raise DatasetGANError(f"{path}: g_ema is not a rosinality StyleGAN2 state dict (style.*, input.input, convs.*)")
    w_dim, z_dim = take("style.1.weight").shape
    resolution = 4 * 2 ** (n_convs // 2)
    blocks = [4 * 2**i for i in range(n_convs // 2 + 1)]
    expected_kernel = setup_filter(_DEFAULT_FILTER) * 4

    state: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        state[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        state[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")
    const = take("input.input")
    if const.ndim != 4 or const.shape[0] != 1:
        raise DatasetGANError(f"{path}: input.input has shape {list(const.shape)}, expected [1, C, 4, 4]")
    state["synthesis.b4.const"] = const[0]

    def modconv(src: str, dst: str) -> None:
        weight = take(f"{src}.conv.weight")
        if weight.ndim != 5 or weight.shape[0] != 1:
            raise DatasetGANError(f"{path}: {src}.conv.weight has shape {list(weight.shape)}, expected [1, O, I, k, k]")
        state[f"{dst}.weight"] = weight[0]
        state[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        state[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")

    def check_kernel(name: str) -> None:
        kernel = take(name)
        if kernel.shape != expected_kernel.shape or not torch.allclose(kernel.float(), expected_kernel, atol=1e-6):
            raise DatasetGANError(f"{path}: {name} is not the [1,3,3,1] filter; datasetgan loads {ARCHITECTURE}")

    layers = [("conv1", "synthesis.b4.conv1")]
    for k, res in enumerate(blocks[1:]):
        layers += [(f"convs.{2 * k}", f"synthesis.b{res}.conv0"), (f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1")]
        check_kernel(f"convs.{2 * k}.conv.blur.kernel")
    for j, (src, dst) in enumerate(layers):
        modconv(src, dst)
        state[f"{dst}.noise_strength"] = take(f"{src}.noise.weight").reshape(())
        state[f"{dst}.bias"] = take(f"{src}.activate.bias")
        state[f"{dst}.noise_const"] = take(f"noises.noise_{j}").reshape(take(f"noises.noise_{j}").shape[-2:])
    torgbs = [("to_rgb1", "synthesis.b4.torgb")] + [(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")
                                                    for k, res in enumerate(blocks[1:])]
    for k, (src, dst) in enumerate(torgbs):
        modconv(src, dst)
        state[f"{dst}.bias"] = take(f"{src}.bias").reshape(-1)
        if k > 0:
            check_kernel(f"{src}.upsample.kernel")
    leftover = sorted(set(sd) - used)
    if leftover:
        raise DatasetGANError(
            f"{path}: g_ema has entries a rosinality StyleGAN2 does not ({', '.join(leftover[:5])}); "
            f"datasetgan loads {ARCHITECTURE}"
        )

    channels = {4: const.shape[1]} | {res: state[f"synthesis.b{res}.conv1.weight"].shape[0] for res in blocks[1:]}
    channel_base, channel_max = _channel_rule(path, channels)
    img_channels = state["synthesis.b4.torgb.weight"].shape[0]
    for name, ours in (("size", resolution), ("latent", w_dim), ("n_mlp", n_mlp)):
        if name in args and args[name] != ours:
            raise DatasetGANError(f"{path}: args.{name} is {args[name]} but the weights say {ours}")
    init_kwargs = dict(
        z_dim=int(z_dim), c_dim=0, w_dim=int(w_dim), img_resolution=resolution, img_channels=int(img_channels),
        mapping_kwargs={"num_layers": n_mlp},
        synthesis_kwargs={"channel_base": channel_base, "channel_max": channel_max},
    )
    lr_mlp = args.get("lr_mlp", 0.01)
    if not math.isclose(lr_mlp, 0.01):
        init_kwargs["mapping_kwargs"]["lr_multiplier"] = lr_mlp
    return init_kwargs, state


def _channel_rule(path: Path, channels: dict[int, int]) -> tuple[int, int]:
    """channel_base, channel_max with min(base // res, max) == channels[res] at every resolution."""
    channel_max = max(channels.values())
    channel_base = max(c * res for res, c in channels.items())
    if any(min(channel_base // res, channel_max) != c for res, c in channels.items()):
        raise DatasetGANError(
            f"{path}: channels per resolution {channels} do not follow NVIDIA's min(channel_base / res, channel_max) "
            f"rule, so they cannot be expressed as a StyleGAN2 config here"
        )
    return int(channel_base), int(channel_max)
