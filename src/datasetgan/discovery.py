"""Unsupervised part discovery, as in Segmentation in Style (Pakhomov et al. 2021): k-means on
the generator's hypercolumns finds parts without a single annotation, and a cluster -> class
mapping turns them into labels.

    discover        -> PartDiscovery: k centroids of normalised hypercolumns of generated images
    cluster_maps    -> each pixel's nearest centroid, for any pyramid of the same generator
    mapping         -> DIR/parts/mapping.json: a class name or "ignore" per cluster, edited by hand
                       or derived from annotated candidates (`mapping_from_annotations`)
    PartLabeller    -> discovery + mapping: labels images with the style interpreter's interface,
                       so the factory generates datasets from it

Features. A hypercolumn is standardised per channel (mean and standard deviation over the
sampled pixels of the first `STATS_IMAGES` images), each level is weighed by 1/sqrt(its
channels), so that every level has the same expected share of the squared norm whatever its
width (StyleGAN's coarse levels have 16x the channels of its fine ones), and the result is
L2-normalised per pixel, as Segmentation in Style clusters normalised features: k-means then
compares directions, not the activation magnitudes that vary from image to image. The
statistics are frozen before clustering, so every pixel is clustered in the same space.

Streaming. Images are synthesised `synth_batch` at a time; from each, `pixels_per_image` seeded
random pixels are gathered as hypercolumns (never whole images) and fed to scikit-learn's
`MiniBatchKMeans.partial_fit` in batches of `batch_size` pixels: at most one synthesis
chunk's pixels and one unfinished batch are held at a time, whatever `samples` is.
"""

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from datasetgan.annotation import read_annotation
from datasetgan.errors import DatasetGANError
from datasetgan.features import Pyramid, feature_channels, gather, merge_levels
from datasetgan.fileio import save_tensors, write_json
from datasetgan.generators.base import Generator
from datasetgan.interpreter import Labels
from datasetgan.labels import IGNORE, distinct_colors
from datasetgan.pipeline import Pipeline, synth_batch
from datasetgan.progress import progress_bar
from datasetgan.uncertainty import image_scores
from datasetgan.viz import grid
from datasetgan.workspace import Workspace

DISCOVERY_SEED = 2_000_000  # discovery's samples: far from candidates (0...), selection (1e6) and datasets (1e8)
STATS_IMAGES = 16  # images whose sampled pixels give the per-channel statistics
MODEL_FILE = "discovery.safetensors"
CONFIG_FILE = "discovery.json"
MAPPING_FILE = "mapping.json"
FORMAT = "datasetgan.part_discovery/1"
IGNORE_NAME = "ignore"  # a cluster mapped to it labels its pixels 255: segmenters skip them
RULES = ("majority", "hungarian")
_CHUNK_VALUES = 2**22  # hypercolumn values cluster_maps holds at a time (16 MiB of float32)


class PartDiscovery:
    """k centroids in the normalised hypercolumn space of chosen pyramid levels, on a `resolution` grid.

    `level_channels` are the channels of the generator's whole pyramid (checked against every
    pyramid given); `layers` the indices of the levels used, in pyramid order; `mean` and
    `scale` the normalisation before the L2 norm: x -> (x - mean) * scale (scale holds the
    level weight over the channel's standard deviation, 0 for a constant channel).
    """

    def __init__(self, centroids: Tensor, mean: Tensor, scale: Tensor, layers: Sequence[int],
                 level_channels: Sequence[int], resolution: int, settings: dict | None = None):
        self.centroids, self.mean, self.scale = centroids.float().cpu(), mean.float().cpu(), scale.float().cpu()
        self.layers, self.level_channels = [int(i) for i in layers], [int(c) for c in level_channels]
        self.resolution = int(resolution)
        self.settings = dict(settings or {})  # how it was made (samples, seed, ...), for people

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def fingerprint(self) -> str:
        """Names this model in its mapping file, so a mapping is never read against other clusters."""
        return hashlib.sha256(self.centroids.numpy().tobytes()).hexdigest()[:16]

    # ---- inference ----

    def cluster_maps(self, pyramid: Pyramid) -> Tensor:
        """Nearest centroid of every pixel: LongTensor [N, S, S] at `resolution`, for a generator pyramid."""
        return self.nearest(pyramid)[0]

    @torch.no_grad()
    def nearest(self, pyramid: Pyramid, groups: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Nearest centroid [N, S, S] and distance ratio [N, S, S] of every pixel.

        The ratio is the distance to the nearest centroid over the distance to the nearest one
        of another group (`groups`: a group id per cluster, e.g. its class; default: each cluster
        its own): 0 on a centroid, 1 on the border between two groups, 0 where all clusters
        share one group. Hypercolumns are gathered in bands of pixels, never for whole images.
        """
        levels = self._levels(pyramid)
        device, size, count = levels[0].device, self.resolution, pyramid[0].shape[0]
        centroids, mean, scale = (t.to(device) for t in (self.centroids, self.mean, self.scale))
        groups = torch.arange(self.k, device=device) if groups is None else groups.to(device)
        squared = (centroids * centroids).sum(1)
        clusters = torch.empty(count * size * size, dtype=torch.long, device=device)
        ratios = torch.empty(count * size * size, device=device)
        band = max(1, _CHUNK_VALUES // self.dim)
        for start in range(0, len(clusters), band):
            pixels = slice(start, start + band)
            where = torch.arange(start, min(start + band, len(clusters)), device=device)
            x = normalise(gather(levels, where // size % size, where % size, size, where // (size * size)), mean, scale)
            distances = ((x * x).sum(1, keepdim=True) - 2 * x @ centroids.T + squared).clamp_min(0).sqrt()
            clusters[pixels], ratios[pixels] = _closest(distances, groups)
        return clusters.view(count, size, size), ratios.view(count, size, size)

    def _levels(self, pyramid: Pyramid) -> Pyramid:
        """The chosen levels of a pyramid of the generator discovered on: merged, float32, channels-last
        (so that gathering reads rows in place)."""
        channels = feature_channels(pyramid)
        if channels != self.level_channels:
            raise DatasetGANError(
                f"the part discovery model expects a feature pyramid with channels {self.level_channels}, but got "
                f"{channels}: use the generator it was discovered with, or run `datasetgan discover` again")
        if any(level.dim() != 4 or level.shape[0] != pyramid[0].shape[0] for level in pyramid):
            raise DatasetGANError("pyramid levels must all be [N, C, H, W] with the same N")
        return [level.float().contiguous(memory_format=torch.channels_last)
                for level in merge_levels([pyramid[i] for i in self.layers])]

    # ---- persistence ----

    def save(self, folder: str | Path) -> None:
        """Centroids and normalisation as safetensors, the rest as JSON (written last: it marks a
        complete model); no pickle, and not scikit-learn's object: its centroids are the model."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"centroids": self.centroids.contiguous(), "mean": self.mean.contiguous(),
                   "scale": self.scale.contiguous()}
        save_tensors(folder / MODEL_FILE, tensors, {"format": FORMAT})
        write_json(folder / CONFIG_FILE, {"format": FORMAT, "k": self.k, "resolution": self.resolution,
                                          "layers": self.layers, "level_channels": self.level_channels,
                                          "settings": self.settings})

    @classmethod
    def load(cls, folder: str | Path) -> "PartDiscovery":
        """Read what `save` wrote; a missing or damaged model is a one-line error."""
        folder = Path(folder)
        config_path, weights = folder / CONFIG_FILE, folder / MODEL_FILE
        if not config_path.is_file() or not weights.is_file():
            raise DatasetGANError(f"no part discovery model in {folder}: run `datasetgan discover DIR -k K` first")
        try:
            config = json.loads(config_path.read_text())
            if config.get("format") != FORMAT:
                raise ValueError(f"format {config.get('format')!r}, expected {FORMAT!r}")
            tensors = load_file(str(weights))
            discovery = cls(tensors["centroids"], tensors["mean"], tensors["scale"], config["layers"],
                            config["level_channels"], config["resolution"], config.get("settings"))
        except (ValueError, KeyError, TypeError, SafetensorError) as exc:
            raise DatasetGANError(f"{folder} holds no valid part discovery model ({exc}): run `datasetgan discover` "
                                  "again") from exc
        discovery._check(folder)
        return discovery

    def _check(self, folder: Path) -> None:
        expected = sum(self.level_channels[i] for i in self.layers if 0 <= i < len(self.level_channels))
        if (not self.layers or max(self.layers) >= len(self.level_channels) or min(self.layers) < 0
                or self.centroids.dim() != 2 or self.dim != expected or self.mean.shape != (expected,)
                or self.scale.shape != (expected,)):
            raise DatasetGANError(f"{folder}: the centroids and statistics do not match the layers: run "
                                  "`datasetgan discover` again")


def normalise(hypercolumns: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
    """Standardised, level-weighted, then unit length per pixel: the space the clusters live in."""
    return F.normalize((hypercolumns - mean) * scale, dim=1)


def _closest(distances: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest cluster of each row of distances [P, k], and its distance over the nearest of another group."""
    nearest = distances.argmin(1)
    first = distances.gather(1, nearest[:, None])[:, 0]
    others = distances.masked_fill(groups[None, :] == groups[nearest][:, None], torch.inf).amin(1)
    ratio = torch.where(others.isfinite(), first / others.clamp_min(torch.finfo(first.dtype).tiny), 0.0)
    return nearest, ratio


# ---- discovery --------------------------------------------------------------------------------


def discover(pipeline: Pipeline, k: int, samples: int = 200, layers: Sequence[int | str] | None = None,
             resolution: int | None = None, pixels_per_image: int = 1024, seed: int = 0, batch_size: int = 4096,
             progress: bool = True, on_batch: Callable[[int], None] | None = None) -> PartDiscovery:
    """k-means (scikit-learn's MiniBatchKMeans, streamed) on hypercolumns of `samples` generated images.

    Images are seeds DISCOVERY_SEED + i under the workspace's sampling settings; `layers`: pyramid
    level indices or names of `generator.feature_layers` (default all); `resolution`: the grid
    hypercolumns are read on (default the workspace's feature resolution); `pixels_per_image`:
    random pixels per image (at most all of them); `batch_size`: pixels per k-means step (raised
    to k if below). `on_batch` is told the size of every batch fed to k-means. Same arguments,
    same centroids, bit for bit.
    """
    _check_counts(k, samples, pixels_per_image)
    generator = pipeline.generator
    chosen = select_layers(generator, layers)
    size = pipeline.feature_resolution if resolution is None else resolution
    if size < 1:
        raise DatasetGANError(f"--resolution must be at least 1 (got {size})")
    per_image = min(pixels_per_image, size * size)
    if k > samples * per_image:
        raise DatasetGANError(f"-k {k} is more than the {samples * per_image} pixels sampled ({samples} samples x "
                              f"{per_image} pixels per image): lower -k or raise --samples or --pixels-per-image")
    sampler = _Sampler(pipeline, chosen, size, per_image, seed)
    mean, scale = _statistics(sampler.chunks(min(samples, STATS_IMAGES)), [generator.feature_channels[i]
                                                                          for i in chosen])
    centroids = _kmeans(sampler, samples, k, max(batch_size, k), seed, mean, scale, progress, on_batch)
    settings = {"generator": pipeline.workspace.config.generator, "samples": samples, "first_seed": DISCOVERY_SEED,
                "pixels_per_image": per_image, "seed": seed, "batch_size": max(batch_size, k),
                "layer_names": [generator.feature_layers[i].name for i in chosen]}
    return PartDiscovery(centroids, mean, scale, chosen, generator.feature_channels, size, settings)


def _check_counts(k: int, samples: int, pixels_per_image: int) -> None:
    if k < 2:
        raise DatasetGANError(f"-k must be at least 2 (got {k})")
    if samples < 1:
        raise DatasetGANError(f"--samples must be at least 1 (got {samples})")
    if pixels_per_image < 1:
        raise DatasetGANError(f"--pixels-per-image must be at least 1 (got {pixels_per_image})")


def select_layers(generator: Generator, layers: Sequence[int | str] | None) -> list[int]:
    """Pyramid level indices, in pyramid order, from indices or names of `generator.feature_layers`."""
    names = [layer.name for layer in generator.feature_layers]
    if layers is None:
        return list(range(len(names)))
    listing = f"{len(names)} layers, 0..{len(names) - 1}: {', '.join(names)}"
    chosen = set()
    for layer in layers:
        if isinstance(layer, str) and layer not in names:
            raise DatasetGANError(f"unknown feature layer {layer!r}: the generator has {listing}")
        index = names.index(layer) if isinstance(layer, str) else int(layer)
        if not 0 <= index < len(names):
            raise DatasetGANError(f"feature layer {index} is out of range: the generator has {listing}")
        chosen.add(index)
    if not chosen:
        raise DatasetGANError(f"no feature layers chosen: give some of the generator's {listing}")
    return sorted(chosen)


class _Sampler:
    """Hypercolumns of seeded random pixels of discovery's images, one synthesis chunk at a time.

    Image i's pixels are drawn from (seed, i) alone, so a chunk's size never changes what is sampled.
    """

    def __init__(self, pipeline: Pipeline, layers: list[int], size: int, per_image: int, seed: int):
        self.pipeline, self.layers, self.size, self.per_image, self.seed = pipeline, layers, size, per_image, seed

    def chunks(self, count: int) -> Iterator[tuple[int, Tensor]]:
        """(images, hypercolumns [images * per_image, D]) for images 0..count-1, chunk by chunk."""
        generator, noise_ids = self.pipeline.generator, self.pipeline.workspace.config.sampling.noise_ids
        step = synth_batch(generator)
        for start in range(0, count, step):
            seeds = list(range(DISCOVERY_SEED + start, DISCOVERY_SEED + min(start + step, count)))
            _, pyramid = generator.synthesize(self.pipeline.ws(seeds), noise_ids(seeds))
            levels = merge_levels([pyramid[i] for i in self.layers])
            images, ys, xs = self._pixels(start, len(seeds), levels[0].device)
            yield len(seeds), gather(levels, ys, xs, self.size, images)

    def _pixels(self, first: int, count: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        chosen = [torch.randperm(self.size * self.size, generator=_pixel_stream(self.seed, first + i))[: self.per_image]
                  for i in range(count)]
        where = torch.stack(chosen).to(device)
        images = torch.arange(count, device=device)[:, None].expand_as(where)
        return images.flatten(), (where // self.size).flatten(), (where % self.size).flatten()


def _pixel_stream(seed: int, image: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, image]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _statistics(chunks: Iterator[tuple[int, Tensor]], level_channels: list[int]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and scale (level weight / standard deviation; 0 for a constant channel),
    from sums in float64 over streamed chunks."""
    total, squares, count = 0.0, 0.0, 0
    for _, features in chunks:
        features = features.double().cpu()
        total, squares, count = total + features.sum(0), squares + (features * features).sum(0), count + len(features)
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    weight = torch.cat([torch.full((c,), c**-0.5, dtype=torch.float64) for c in level_channels])
    scale = torch.where(std > 1e-6, weight / std.clamp_min(1e-6), 0.0)
    return mean.float(), scale.float()


def _kmeans(sampler: _Sampler, samples: int, k: int, batch_size: int, seed: int, mean: Tensor, scale: Tensor,
            progress: bool, on_batch: Callable[[int], None] | None) -> Tensor:
    """Centroids [k, D] of MiniBatchKMeans fed batch_size pixels per step as the chunks arrive."""
    from sklearn.cluster import MiniBatchKMeans  # imported here: labelling with a saved model needs no sklearn

    # partial_fit initialises once (k-means++ on the first batch), so n_init=1 says what happens
    kmeans = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=batch_size, n_init=1, compute_labels=False)

    def feed(batch: Tensor) -> None:
        kmeans.partial_fit(batch.cpu().numpy())
        if on_batch is not None:
            on_batch(len(batch))

    held = None  # normalised pixels not yet fed: fewer than batch_size, then the newest chunk with them
    with progress_bar(total=samples, show=progress, desc=f"part discovery, k={k}", unit="image") as bar:
        for images, features in sampler.chunks(samples):
            features = normalise(features, mean.to(features.device), scale.to(features.device))
            held = features if held is None else torch.cat([held, features])
            while len(held) >= batch_size:
                feed(held[:batch_size])
                held = held[batch_size:]
            bar.update(images)
    if len(held):
        feed(held)
    return torch.from_numpy(kmeans.cluster_centers_).float()


# ---- the cluster -> class mapping ---------------------------------------------------------------


def check_mapping(mapping: Mapping[int | str, str], k: int, class_names: Sequence[str], where: str
                  ) -> dict[int, str]:
    """Every cluster 0..k-1 with a class name or "ignore" (clusters not named: "ignore"); a bad
    cluster id or class name is a one-line error naming `where`."""
    checked = {cluster: IGNORE_NAME for cluster in range(k)}
    for key, name in mapping.items():
        try:
            cluster = int(key)
        except (TypeError, ValueError):
            raise DatasetGANError(f"{where}: cluster {key!r} is not a number: clusters are 0..{k - 1}") from None
        if not 0 <= cluster < k:
            raise DatasetGANError(f"{where}: cluster {cluster} is outside 0..{k - 1} (k={k})")
        if name != IGNORE_NAME and name not in class_names:
            raise DatasetGANError(f"{where}: unknown class {name!r} for cluster {cluster}: use one of "
                                  f"{', '.join(class_names)} or {IGNORE_NAME}")
        checked[cluster] = name
    return checked


def mapping_path(workspace: Workspace) -> Path:
    return workspace.parts_dir / MAPPING_FILE


def read_mapping(workspace: Workspace, discovery: PartDiscovery) -> dict[int, str]:
    """Cluster -> class name or "ignore", for every cluster, from DIR/parts/mapping.json."""
    path = mapping_path(workspace)
    if not path.is_file():
        raise DatasetGANError(f"no cluster mapping {path}: run `datasetgan discover` (it writes one) and edit it")
    try:
        payload = json.loads(path.read_text())
        clusters = payload["clusters"]
        if not isinstance(clusters, dict):
            raise TypeError(f'"clusters" is a {type(clusters).__name__}, not an object')
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetGANError(f'{path} is not a cluster mapping ({exc}): write {{"clusters": {{"0": "CLASS or '
                              f'ignore", ...}}}}') from exc
    made_for = payload.get("discovery")
    if made_for not in (None, discovery.fingerprint):
        raise DatasetGANError(f"{path} was made for another discovery model: run `datasetgan discover` again "
                              "or delete its \"discovery\" field once its clusters are right")
    return check_mapping(clusters, discovery.k, [c.name for c in workspace.label_classes], str(path))


def write_mapping(workspace: Workspace, discovery: PartDiscovery, mapping: Mapping[int | str, str]) -> None:
    """Check and write DIR/parts/mapping.json, tied to `discovery` by its fingerprint."""
    checked = check_mapping(mapping, discovery.k, [c.name for c in workspace.label_classes], "the mapping")
    write_json(mapping_path(workspace), {"discovery": discovery.fingerprint,
                                         "clusters": {str(c): name for c, name in checked.items()}})


def overlap(clusters: Tensor, masks: Tensor, k: int, num_classes: int) -> Tensor:
    """Pixels of each (cluster, class) pair [k, C] over cluster maps and masks [N, S, S]; ignore pixels left out."""
    labelled = masks != IGNORE
    pairs = clusters[labelled].long() * num_classes + masks[labelled].long()
    return torch.bincount(pairs, minlength=k * num_classes).view(k, num_classes)


def assign_classes(counts: Tensor, class_names: Sequence[str], rule: str = "majority") -> dict[int, str]:
    """Cluster -> class from the overlap counts [k, C].

    majority: each cluster takes the class most of its annotated pixels have (ties: the lower
    class id). hungarian: a one-to-one matching of clusters and classes maximising the pixels
    they share (`linear_sum_assignment`), so that a class that is no cluster's majority (a small
    part) still gets its best cluster; clusters it leaves out (k > C) or pairs with no pixel in
    common fall back to majority. A cluster with no annotated pixel is "ignore" under both.
    """
    if rule not in RULES:
        raise DatasetGANError(f"unknown mapping rule {rule!r}: use {' or '.join(RULES)}")
    mapping = {c: class_names[int(row.argmax())] if row.sum() > 0 else IGNORE_NAME for c, row in enumerate(counts)}
    if rule == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, columns = linear_sum_assignment(counts.numpy(), maximize=True)
        mapping |= {int(r): class_names[int(c)] for r, c in zip(rows, columns) if counts[r, c] > 0}
    return mapping


def mapping_from_annotations(pipeline: Pipeline, discovery: PartDiscovery, ids: Sequence[str] | None = None,
                             rule: str = "majority") -> dict[int, str]:
    """Cluster -> class derived from annotated candidates (`ids`; default all), by `rule` (see `assign_classes`)."""
    workspace, generator = pipeline.workspace, pipeline.generator
    ids = list(workspace.annotated_ids() if ids is None else ids)
    if not ids:
        raise DatasetGANError(f"no annotations in {workspace.annotations_dir} to derive a mapping from: paint some "
                              "with `datasetgan annotate`, or write the mapping by hand")
    counts = torch.zeros(discovery.k, workspace.num_classes, dtype=torch.long)
    step = synth_batch(generator)
    for start in range(0, len(ids), step):
        chunk = [workspace.check_id(cid) for cid in ids[start : start + step]]
        _, pyramid = generator.synthesize(workspace.ws_for(chunk), workspace.config.sampling.noise_ids(chunk))
        masks = torch.stack([read_annotation(workspace, cid, discovery.resolution) for cid in chunk])
        counts += overlap(discovery.cluster_maps(pyramid).cpu(), masks, discovery.k, workspace.num_classes)
    return assign_classes(counts, [c.name for c in workspace.label_classes], rule)


# ---- labelling ------------------------------------------------------------------------------------


class PartLabeller:
    """Discovered parts as a labeller: `label(pyramid) -> Labels`, as the style interpreter's.

    mask: the class its cluster maps to, 255 (ignore) for clusters mapped to "ignore", so a
    segmenter trained on the dataset skips them rather than learns them as background.
    uncertainty: the distance to the nearest centroid over the distance to the nearest centroid
    of another label (`PartDiscovery.nearest`), in [0, 1]: 1 on the border between two labels,
    low deep inside one; clusters of the same class never make a pixel uncertain. scores: the
    mean of each image's 10 % most uncertain pixels, as for the interpreter.
    """

    kind = "clusters"  # recorded in a generated dataset's settings
    uncertainty_scale = 1.0  # the ratio is at most 1: drawn white in the uncertainty PNGs

    def __init__(self, discovery: PartDiscovery, mapping: Mapping[int, str], class_names: Sequence[str]):
        checked = check_mapping(mapping, discovery.k, class_names, "the cluster mapping")
        if all(name == IGNORE_NAME for name in checked.values()):
            raise DatasetGANError("every cluster maps to ignore: name a class for some clusters in parts/mapping.json "
                                  "(or annotate candidates and run `datasetgan discover` again)")
        ids = {name: i for i, name in enumerate(class_names)}
        self.discovery = discovery
        self.mapping = checked
        self.table = torch.tensor([IGNORE if name == IGNORE_NAME else ids[name] for name in checked.values()],
                                  dtype=torch.uint8)  # cluster -> class id

    @classmethod
    def open(cls, workspace: Workspace) -> "PartLabeller":
        """The workspace's discovery model and mapping (DIR/parts/)."""
        discovery = PartDiscovery.load(workspace.parts_dir)
        return cls(discovery, read_mapping(workspace, discovery), [c.name for c in workspace.label_classes])

    def label(self, pyramid: Pyramid, top_fraction: float = 0.1) -> Labels:
        """Mapped mask [N, S, S] uint8, distance-ratio uncertainty [N, S, S] and image scores [N]."""
        table = self.table.to(pyramid[0].device)
        clusters, ratio = self.discovery.nearest(pyramid, groups=table.long())
        return Labels(table[clusters], ratio, image_scores(ratio, top_fraction))


# ---- pictures ---------------------------------------------------------------------------------------


def cluster_picture(pipeline: Pipeline, discovery: PartDiscovery, count: int = 8) -> np.ndarray:
    """image | cluster map pairs, four to a row, of the first `count` candidates (discovery's own
    samples in a workspace without candidates): uint8 [H, W, 3]."""
    workspace, generator = pipeline.workspace, pipeline.generator
    ids = workspace.candidate_ids()[:count]
    seeds = [int(cid) for cid in ids] or list(range(DISCOVERY_SEED, DISCOVERY_SEED + count))
    ws = workspace.ws_for(ids) if ids else pipeline.ws(seeds)
    colors = np.asarray(distinct_colors(discovery.k + 1)[1:], np.uint8)  # every cluster a hue: black is no cluster's
    tiles, step, size = [], synth_batch(generator), (generator.resolution, generator.resolution)
    for start in range(0, len(seeds), step):
        images, pyramid = generator.synthesize(ws[start : start + step],
                                               workspace.config.sampling.noise_ids(seeds[start : start + step]))
        maps = F.interpolate(discovery.cluster_maps(pyramid)[:, None].float(), size=size, mode="nearest")[:, 0]
        for image, clusters in zip(generator.to_uint8(images).permute(0, 2, 3, 1).cpu().numpy(), maps.cpu().numpy()):
            tiles += [image, colors[clusters.astype(np.int64)]]
    return grid(tiles, columns=8, scale=max(1, 128 // generator.resolution))
