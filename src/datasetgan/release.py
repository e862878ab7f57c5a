"""The official DatasetGAN release's annotated latents as a datasetgan workspace.

The release's layout (its `train_interpreter.py` and `experiments/*.json`):

    latent_stylegan1.npy       the annotated latents: z [N, 512] when the experiment's
                               `annotation_data_from_w` is false (face_34, car_20), else w+ [N, num_ws, 512]
    avg_latent_stylegan1.npy   the truncation centre; it travels with the generator (see
                               `datasetgan generator convert --avg-latent`)
    ANNOTATIONS/image_{i}.jpg, ANNOTATIONS/image_mask{i}.npy
                               index mask i (and the release's render of it) belongs to latent i

The release's separate `make_training_data.py` numbers its renders from the mean latent, so
its image 0 is not latent 0; `train_interpreter.py`, followed here, pairs mask i with latent i.
Latent i becomes candidate i (id 00000i). The release draws fresh noise on every call, so its
renders do not reproduce exactly; the workspace fixes each candidate's noise by its id
(`noise: per_sample`) and the report gives how far our renders are from the release's.

The release turns a class of fewer than 30 pixels in a mask into background before training;
here the workspace's own rule applies when the interpreter trains (small fragments become
ignore: `annotation.drop_small_fragments`), and the masks are imported as they are.

Masks that are wider than tall (cars: 512 x 384 of a 512 px generator, whose image has black
bars above and below) are scaled to the image width and centred, the bars marked ignore.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datasetgan.errors import DatasetGANError
from datasetgan.formats.masks import save_mask
from datasetgan.generators.base import Generator
from datasetgan.generators.registry import load_generator
from datasetgan.labels import IGNORE, LabelClass, check_class_ids, parse_class_names
from datasetgan.pipeline import Pipeline
from datasetgan.progress import progress_bar
from datasetgan.workspace import SamplingSettings, Workspace

RELEASE_PSI = 0.7  # the release's truncation threshold
RELEASE_CUTOFF = 8  # w slots it truncates for faces and cars (7 for cats and bedrooms)


@dataclass
class ReleaseImport:
    ids: list[str]
    classes_used: int  # the largest class id in the masks + 1
    render_difference: float  # mean |ours - release's| of the renders, in 0..255 grey levels

    def summary(self) -> str:
        return (f"imported {len(self.ids)} annotated latents as candidates {self.ids[0]}..{self.ids[-1]} "
                f"({self.classes_used} classes in the masks); our renders differ from the release's by "
                f"{self.render_difference:.1f} grey levels on average (the release's noise is not stored)")


def read_latents(path: Path, from_w: bool) -> torch.Tensor:
    """The release's latent file: z [N, 512], or w+ [N, num_ws, 512] with `from_w`."""
    try:
        latents = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetGANError(f"cannot read the latents {path}: {exc}") from exc
    latents = latents.squeeze(1) if latents.ndim == 3 and latents.shape[1] == 1 else latents
    expected = 3 if from_w else 2
    if latents.ndim != expected or not np.issubdtype(latents.dtype, np.floating):
        kind = ("w+ [N, num_ws, 512] with --from-w (drop it for z latents [N, 512])" if from_w
                else "z [N, 512] (add --from-w for w+ latents [N, num_ws, 512])")
        raise DatasetGANError(f"{path} holds {latents.dtype} of shape {list(latents.shape)}, expected {kind}")
    return torch.from_numpy(latents.astype(np.float32))


def read_release_mask(folder: Path, index: int, resolution: int) -> np.ndarray:
    """image_mask{index}.npy as an index mask of the generator's image size (see the module notes)."""
    path = folder / f"image_mask{index}.npy"
    if not path.is_file():
        raise DatasetGANError(f"no {path}: the release pairs mask i with latent i, so every latent needs its mask")
    try:
        mask = np.squeeze(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DatasetGANError(f"cannot read the mask {path}: {exc}") from exc
    if mask.ndim != 2 or mask.shape[0] > mask.shape[1]:
        raise DatasetGANError(f"{path} has shape {list(mask.shape)}: expected an index mask, square or wider than tall")
    if not np.issubdtype(mask.dtype, np.number) or (mask < 0).any() or (mask != np.round(mask)).any():
        raise DatasetGANError(f"{path} is not an index mask (non-negative whole class ids)")
    height = round(mask.shape[0] * resolution / mask.shape[1])
    scaled = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(height, resolution),
                           mode="nearest")[0, 0].numpy()
    full = np.full((resolution, resolution), IGNORE, dtype=np.uint8)
    top = (resolution - height) // 2
    full[top : top + height] = scaled
    return full


def import_release(root: str | Path, generator_ref: str, annotations: Path, latents_path: Path,
                   classes: list[LabelClass] | None = None, from_w: bool = False,
                   truncation_cutoff: int = RELEASE_CUTOFF, device: str | torch.device = "auto",
                   progress: bool = True) -> tuple[Pipeline, ReleaseImport]:
    """A new workspace at `root` holding the release's annotated latents as candidates with their masks.

    Everything is read and checked before the workspace is created, so a failed import leaves nothing.
    `classes`: the experiment's class names (default class0..classK-1, K from the masks).
    """
    generator = load_generator(generator_ref, device)
    latents = read_latents(Path(latents_path), from_w)
    masks = [read_release_mask(Path(annotations), i, generator.resolution) for i in range(len(latents))]
    renders = [release_render(Path(annotations), i) for i in range(len(latents))]
    used = max(int(m[m != IGNORE].max(initial=0)) for m in masks) + 1
    classes = classes or parse_class_names(",".join(f"class{i}" for i in range(max(used, 2))))
    for i, mask in enumerate(masks):
        check_class_ids(mask, len(classes), str(Path(annotations) / f"image_mask{i}.npy"),
                        hint=": give --classes with one name per class of the release's experiment")
    sampling = SamplingSettings(psi=RELEASE_PSI, truncation_cutoff=truncation_cutoff, noise="per_sample")
    ws = release_ws(generator, latents, from_w, sampling, latents_path)

    pipeline = Pipeline(Workspace.init(root, generator_ref, classes, sampling=sampling), device, generator)
    ids = list(range(len(latents)))
    images = torch.cat([generator.to_uint8(generator.synthesize(w[None], sampling.noise_ids([i]))[0])
                        for i, w in progress_bar(list(zip(ids, ws)), show=progress, desc="rendering", unit="image")])
    added = pipeline.workspace.add_candidates(ids, ws, images)
    colors = [c.color for c in pipeline.workspace.label_classes]
    for cid, mask in zip(added, masks):
        save_mask(pipeline.workspace.annotation_path(cid), mask, colors)
    difference = float(np.mean([render_difference(theirs, ours) for theirs, ours in zip(renders, images)]))
    return pipeline, ReleaseImport(added, used, difference)


def render_difference(theirs: np.ndarray, ours: torch.Tensor) -> float:
    """Mean |ours - theirs| in grey levels, theirs scaled to our width and compared with the rows it
    covers (a car's 512 x 384 render against the middle of our 512 px image)."""
    image = ours.permute(1, 2, 0).cpu().numpy().astype(np.float32)
    width = image.shape[1]
    height = round(theirs.shape[0] * width / theirs.shape[1])
    top = (image.shape[0] - height) // 2
    scaled = np.asarray(Image.fromarray(theirs).resize((width, height), Image.BILINEAR), np.float32)
    return float(np.abs(scaled - image[top : top + height]).mean())


def release_ws(generator: Generator, latents: torch.Tensor, from_w: bool, sampling: SamplingSettings,
               where: Path) -> torch.Tensor:
    """w+ latents as stored, or z mapped and truncated as the release truncates (psi on the first slots)."""
    if from_w:
        expected = (generator.num_ws, generator.w_dim)
        if tuple(latents.shape[1:]) != expected:
            raise DatasetGANError(f"{where}: w+ latents of shape {list(latents.shape[1:])}, but the generator "
                                  f"takes {list(expected)}")
        return latents.to(generator.device)
    if latents.shape[1] != generator.z_dim:
        raise DatasetGANError(f"{where}: z of size {latents.shape[1]}, but the generator takes {generator.z_dim}")
    return generator.ws_from_zs(latents, sampling.psi, sampling.truncation_cutoff)


def release_render(folder: Path, index: int) -> np.ndarray:
    """The release's image_{index}.jpg (or .png) as uint8 [H, W, 3]: ours are compared with it."""
    for suffix in (".jpg", ".png"):
        path = folder / f"image_{index}{suffix}"
        if path.is_file():
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"), dtype=np.uint8)
    raise DatasetGANError(f"no {folder / f'image_{index}.jpg'}: the release's annotation folder holds image_i.jpg "
                          f"beside image_mask{i}.npy")
