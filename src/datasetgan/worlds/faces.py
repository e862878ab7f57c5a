"""A procedural cartoon-face world with exact pixel labels.

Every random choice of an image comes from its own seed, so a seed renders the same bytes in
any batch and at any position in it. Parameters are drawn per seed with numpy (a fixed table of
uniforms plus a few small noise grids); the drawing itself is vectorised over the batch in
torch: each part is a cheap implicit shape evaluated on a supersampled coordinate grid, painted
into a *material* map (finer than the classes: iris, teeth, collar ...) plus a brightness map.
The image is the block average of the painted colours, the label map the block majority of the
material classes, so labels sit exactly where their part is drawn. Parts that cover little of
the image (face features, ears, neck, clothes, the head and its hair) are evaluated only inside
a per-image window around them, which is what makes the renderer fast.

Determinism note: per-pixel maths uses only IEEE-exact operations (+, -, *, /, sqrt, floor,
comparisons, clamp, where) and per-image pooling/interpolation. Transcendental functions are
avoided on pixel tensors because SIMD and scalar code paths may round them differently, which
would make a pixel depend on where its image sits in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from enum import IntEnum
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from datasetgan.errors import DatasetGANError
from datasetgan.labels import LabelClass

CLASSES: tuple[LabelClass, ...] = (
    LabelClass("background", (0, 0, 0)),
    LabelClass("skin", (255, 190, 140)),
    LabelClass("hair", (150, 75, 20)),
    LabelClass("eye", (0, 230, 255)),
    LabelClass("eyebrow", (255, 240, 0)),
    LabelClass("nose", (255, 60, 200)),
    LabelClass("mouth", (230, 0, 30)),
    LabelClass("ear", (40, 210, 60)),
    LabelClass("neck", (170, 120, 255)),
    LabelClass("clothes", (30, 70, 230)),
)
_CLASS_ID = {c.name: i for i, c in enumerate(CLASSES)}

# What the world reports of each image exactly (`FacesWorld.attributes`): a few values each,
# coarse enough to be told apart at 32 px; a quality check counts how often a generator draws each.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "hair_colour": ("dark", "brown", "blond", "red", "grey", "colourful"),
    "hair_length": ("none", "short", "long"),
    "facial_hair": ("no", "yes"),
    "clothes": ("plain", "striped"),
    "background": ("plain", "striped", "checked"),
}


class _M(IntEnum):
    """Materials: what a pixel is painted with. Each has a colour per image and one class."""

    BACKGROUND = 0
    SKIN = 1
    HAIR = 2
    EYE_WHITE = 3
    IRIS = 4
    PUPIL = 5
    LASH = 6
    GLINT = 7
    BROW = 8
    NOSE = 9
    NOSTRIL = 10
    LIPS = 11
    MOUTH_INSIDE = 12
    TEETH = 13
    EAR = 14
    EAR_INSIDE = 15
    NECK = 16
    CLOTHES = 17
    TRIM = 18


_MATERIAL_CLASS = {
    _M.BACKGROUND: "background", _M.SKIN: "skin", _M.HAIR: "hair",
    _M.EYE_WHITE: "eye", _M.IRIS: "eye", _M.PUPIL: "eye", _M.LASH: "eye", _M.GLINT: "eye",
    _M.BROW: "eyebrow", _M.NOSE: "nose", _M.NOSTRIL: "nose",
    _M.LIPS: "mouth", _M.MOUTH_INSIDE: "mouth", _M.TEETH: "mouth",
    _M.EAR: "ear", _M.EAR_INSIDE: "ear", _M.NECK: "neck", _M.CLOTHES: "clothes", _M.TRIM: "clothes",
}
# Block votes count classes by their rank in this order; ties go to the later (top-most) part.
_TIE_ORDER = ("background", "clothes", "neck", "skin", "ear", "hair", "nose", "mouth", "eyebrow",
              "eye")
_RANK_OF_MATERIAL = torch.tensor([_TIE_ORDER.index(_MATERIAL_CLASS[m]) for m in _M],
                                 dtype=torch.int16)
_CLASS_OF_RANK = torch.tensor([_CLASS_ID[name] for name in _TIE_ORDER], dtype=torch.uint8)

_N_UNIFORMS = 256
_SMOOTH_GRID = 6   # cells across the image: shading and cloth folds
_FINE_GRID = 24    # curls, strand jitter, bumpy hair outlines
_BG_GRID = 5       # background colour clouds
_CHUNK_PIXELS = 1 << 18  # supersampled pixels per chunk: keeps temporaries in cache
_MARGIN = 0.05     # head units of slack around a part's computed extent, for its window
_FAR = 100.0       # head units: "to the edge of the image", for windows
_MAX_NOISE = 3.0   # the fine noise is clamped to this, which bounds bumpy hair outlines


class FacesWorld:
    """Cartoon heads and shoulders on cluttered backgrounds, with exact part labels."""

    name = "faces"
    classes: tuple[LabelClass, ...] = CLASSES
    attribute_values: dict[str, tuple[str, ...]] = ATTRIBUTES

    def __init__(self) -> None:
        self.seed_ranges: dict[str, range] = {
            "gan_train": range(0, 1_000_000_000),
            "real_train": range(1_000_000_000, 1_500_000_000),
            "real_test": range(2_000_000_000, 2_100_000_000),
        }

    def render(self, seeds: Sequence[int], resolution: int = 64) -> tuple[Tensor, Tensor]:
        """Images uint8 [N,3,H,W] and labels uint8 [N,H,W] (ids into `classes`) for `seeds`."""
        seeds = _checked_seeds(seeds)
        _check_resolution(resolution)
        resolution = int(resolution)
        supersample = 4 if resolution < 64 else 2
        per_chunk = max(1, _CHUNK_PIXELS // (resolution * supersample) ** 2)
        images, labels = [], []
        for start in range(0, len(seeds), per_chunk):
            chunk = seeds[start:start + per_chunk]
            image, label = _render_chunk(chunk, resolution, supersample)
            images.append(image)
            labels.append(label)
        return torch.cat(images), torch.cat(labels)

    def attributes(self, seeds: Sequence[int]) -> dict[str, np.ndarray]:
        """For each of `ATTRIBUTES`, the index of its value per seed (int [N]), exactly as drawn."""
        seeds = _checked_seeds(seeds)
        chunks = [_scene_attributes(_draw_scene(seeds[i:i + 1024], 32)) for i in range(0, len(seeds), 1024)]
        return {name: np.concatenate([c[name] for c in chunks]) for name in ATTRIBUTES}


# ----------------------------------------------------------------------------- validation


def _checked_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = seeds.tolist() if isinstance(seeds, (Tensor, np.ndarray)) else list(seeds)
    if not seeds:
        raise DatasetGANError("render needs at least one seed: pass a non-empty list of ints")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2**31:
            raise DatasetGANError(f"seed {s!r} is not an int in 0..2**31-1")
    return [int(s) for s in seeds]


def _check_resolution(resolution: int) -> None:
    valid = isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool)
    if not valid or resolution not in (32, 64, 128, 256):
        raise DatasetGANError(
            f"resolution {resolution!r} is not supported: use a power of two in 32..256 "
            "(32, 64, 128 or 256)")


# ----------------------------------------------------------------------------- randomness


class _Draws:
    """Hands out the columns of a [N, K] table of per-seed uniforms, one per parameter.

    Column j is the j-th draw of every seed, so parameters are computed for the whole batch at
    once while each image's values depend on its own seed only.
    """

    def __init__(self, table: np.ndarray) -> None:
        self._table = table
        self._col = 0

    def uniform(self, lo: float | np.ndarray = 0.0, hi: float | np.ndarray = 1.0) -> np.ndarray:
        if self._col >= self._table.shape[1]:
            raise RuntimeError("faces world: raise _N_UNIFORMS, the parameter table ran out")
        col = self._table[:, self._col]
        self._col += 1
        return lo + (np.asarray(hi) - lo) * col

    def chance(self, p: float | np.ndarray) -> np.ndarray:
        return self.uniform() < p

    def choice(self, weights: Sequence[float]) -> np.ndarray:
        edges = np.cumsum(weights) / np.sum(weights)
        return np.minimum(np.searchsorted(edges, self.uniform(), side="right"), len(weights) - 1)

    def uniform_by(self, index: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
        """A uniform whose range is picked per image by `index` (e.g. a style)."""
        lo, hi = np.asarray(ranges, dtype=np.float64)[index].T
        return self.uniform(lo, hi)

    def colour(self, palette: np.ndarray, weights: Sequence[float], jitter: float) -> np.ndarray:
        """A palette entry, scaled per channel by up to ±jitter: [N, 3] in 0..255."""
        return self.jittered(palette[self.choice(weights)], jitter)

    def jittered(self, base: np.ndarray, jitter: float) -> np.ndarray:
        """Colours [N, 3] scaled per channel by up to ±jitter, in 0..255."""
        scale = np.stack([self.uniform(1 - jitter, 1 + jitter) for _ in range(3)], axis=1)
        return np.clip(base * scale, 0, 255)


@dataclass
class _SeedRandomness:
    """What a chunk's seeds drew: parameter uniforms and noise grids, one row per image."""

    uniforms: np.ndarray  # [N, K] float64 in [0, 1)
    smooth: Tensor        # [N, 1, g, g] standard normal grid
    fine: Tensor          # [N, 1, G, G]
    background: Tensor    # [N, 3, b, b]
    sensor: Tensor        # [N, 3, R, R]


def _draw_seed_randomness(seeds: Sequence[int], resolution: int) -> _SeedRandomness:
    """Everything random about an image, drawn from its seed alone in a fixed order."""
    uniforms, smooth, fine, background, sensor = [], [], [], [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        uniforms.append(rng.random(_N_UNIFORMS))
        smooth.append(rng.standard_normal((1, _SMOOTH_GRID, _SMOOTH_GRID), dtype=np.float32))
        fine.append(rng.standard_normal((1, _FINE_GRID, _FINE_GRID), dtype=np.float32))
        background.append(rng.standard_normal((3, _BG_GRID, _BG_GRID), dtype=np.float32))
        # Drawn last, so the scene itself does not depend on the resolution.
        sensor.append(rng.standard_normal((3, resolution, resolution), dtype=np.float32))
    stack = lambda arrays: torch.from_numpy(np.stack(arrays))  # noqa: E731
    return _SeedRandomness(np.stack(uniforms), stack(smooth), stack(fine), stack(background),
                           stack(sensor))


def _column(values: np.ndarray) -> Tensor:
    """[N] numpy values -> [N,1,1] tensor that broadcasts over an image."""
    values = np.asarray(values)
    dtype = np.bool_ if values.dtype == np.bool_ else np.float32
    return torch.from_numpy(values.astype(dtype)).view(-1, 1, 1)


def _as_columns(params: SimpleNamespace) -> SimpleNamespace:
    """Numpy parameters [N] -> tensors [N,1,1] for drawing."""
    return SimpleNamespace(**{k: _column(v) for k, v in vars(params).items()})


def _unit_vector(d: _Draws) -> tuple[np.ndarray, np.ndarray]:
    """A random direction without trigonometry (normalised point of a square)."""
    x, y = d.uniform(-1, 1), d.uniform(-1, 1)
    norm = np.sqrt(x * x + y * y) + 1e-6
    return x / norm, y / norm


def _rotation(half_angle_tan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of an angle from tan(angle / 2), by rational formulas (no trigonometry)."""
    t2 = half_angle_tan * half_angle_tan
    return (1 - t2) / (1 + t2), 2 * half_angle_tan / (1 + t2)


def _hsv_colour(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV (all in 0..1) to RGB [N, 3] in 0..255."""
    h6 = (h % 1.0) * 6.0
    c = v * s
    x = c * (1 - np.abs(h6 % 2.0 - 1))
    zero = np.zeros_like(c)
    sector = np.floor(h6).astype(int) % 6
    r = np.choose(sector, [c, x, zero, zero, x, c])
    g = np.choose(sector, [x, c, c, x, zero, zero])
    b = np.choose(sector, [zero, zero, x, c, c, x])
    return (np.stack([r, g, b], axis=1) + (v - c)[:, None]) * 255.0


# ----------------------------------------------------------------------------- scene parameters

# Skin tones from very light to very dark; a tone is a point on this polyline.
_SKIN_TONES = np.array([(255, 226, 204), (241, 198, 166), (226, 174, 134), (200, 140, 100),
                        (165, 108, 72), (124, 78, 52), (86, 55, 38)], dtype=np.float64)
_HAIR_COLOURS = np.array([
    (22, 18, 18), (55, 35, 22), (100, 64, 38), (150, 105, 62), (215, 180, 110),
    (238, 225, 185), (175, 72, 30), (115, 38, 22), (140, 140, 140), (225, 225, 222),
    (40, 70, 200), (230, 80, 170), (120, 50, 175), (40, 160, 95)], dtype=np.float64)
_HAIR_WEIGHTS = (0.2, 0.18, 0.14, 0.1, 0.09, 0.03, 0.06, 0.05, 0.05, 0.03, 0.02, 0.02, 0.02, 0.01)
_HAIR_COLOUR_GROUP = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5])  # of each `_HAIR_COLOURS` entry
_IRIS_COLOURS = np.array([(55, 32, 20), (100, 62, 30), (125, 105, 45), (70, 125, 75),
                          (65, 115, 200), (115, 128, 140)], dtype=np.float64)
_IRIS_WEIGHTS = (0.35, 0.22, 0.1, 0.1, 0.15, 0.08)
_LIPSTICKS = np.array([(190, 25, 50), (225, 85, 125), (120, 25, 55), (200, 60, 40)],
                      dtype=np.float64)

# Face shapes: round, oval, long, square. Head units: the face half-width is about 1.
_FACE_RANGES = dict(
    half_width=[(0.88, 0.98), (0.8, 0.9), (0.72, 0.82), (0.86, 0.96)],
    top=[(1.0, 1.1), (1.05, 1.15), (1.1, 1.2), (1.0, 1.1)],
    chin=[(1.0, 1.12), (1.15, 1.3), (1.3, 1.45), (1.08, 1.22)],
    jaw=[(0.05, 0.2), (0.15, 0.35), (0.1, 0.3), (0.0, 0.15)],
    square=[(0.0, 0.2), (0.0, 0.2), (0.0, 0.3), (0.45, 0.85)],
)

# Hair styles and their geometry ranges (head units, v grows downwards, eyes near v = 0.1).
_HAIR_STYLES = ("bald", "balding", "buzz", "short", "mop", "bob", "long", "ponytail", "curly")
_HAIR_STYLE_WEIGHTS = (0.04, 0.04, 0.07, 0.17, 0.12, 0.15, 0.2, 0.09, 0.12)
_HAIR_LENGTH_OF_STYLE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1])  # into ATTRIBUTES["hair_length"]
_HAIR_RANGES = dict(
    width=[(1, 1), (1.02, 1.06), (1.0, 1.02), (1.05, 1.15), (1.12, 1.25), (1.12, 1.28),
           (1.12, 1.28), (1.03, 1.1), (1.3, 1.5)],
    height=[(1, 1), (1.0, 1.02), (1.0, 1.02), (1.05, 1.15), (1.05, 1.18), (1.05, 1.2),
            (1.04, 1.15), (1.03, 1.1), (1.18, 1.4)],
    lift=[(0, 0), (0, 0), (0, 0), (0.0, 0.08), (0.02, 0.1), (0.02, 0.1), (0.0, 0.08),
          (0.0, 0.05), (0.05, 0.2)],
    bottom=[(-9, -9), (0.15, 0.3), (-0.1, 0.1), (-0.15, 0.35), (0.45, 0.8), (0.75, 1.15),
            (0.6, 1.1), (-0.1, 0.15), (0.4, 0.9)],
    fringe=[(-9, -9), (-9, -9), (-0.8, -0.6), (-0.8, -0.5), (-0.4, -0.15), (-0.45, -0.15),
            (-0.75, -0.3), (-0.8, -0.55), (-0.65, -0.4)],
    side=[(0.8, 0.8), (0.8, 0.88), (0.9, 0.97), (0.88, 0.97), (0.8, 0.9), (0.72, 0.85),
          (0.72, 0.85), (0.9, 0.97), (0.82, 0.92)],
    back=[(-9, -9), (-9, -9), (-9, -9), (-9, -9), (-9, -9), (0.85, 1.25), (2.0, 3.2),
          (-9, -9), (-9, -9)],
)


def _sample_figure(d: _Draws) -> SimpleNamespace:
    """Placement, pose, face shape and lighting."""
    shape = d.choice((0.3, 0.3, 0.15, 0.25))
    face = {k: d.uniform_by(shape, r) for k, r in _FACE_RANGES.items()}
    cos_h, sin_h = _rotation(d.uniform(-0.12, 0.12))  # head roll up to about ±14 degrees
    cos_b, sin_b = _rotation(d.uniform(-0.04, 0.04))
    light_x, light_y = _unit_vector(d)
    chin = face["chin"]
    return SimpleNamespace(
        scale=d.uniform(0.4, 0.52), x=d.uniform(-0.12, 0.12), y=d.uniform(-0.2, 0.0),
        cos_h=cos_h, sin_h=sin_h, cos_b=cos_b, sin_b=sin_b,
        yaw=d.uniform(-0.1, 0.1), a=face["half_width"], top=face["top"], chin=chin,
        jaw=face["jaw"], square=face["square"],
        light_x=light_x, light_y=light_y, light=d.uniform(0.08, 0.3), rim=d.uniform(0.08, 0.25),
        neck_w=d.uniform(0.3, 0.46) * face["half_width"] + 0.05,
        shoulder_y=chin + d.uniform(0.1, 0.4),
    )


def _sample_features(d: _Draws, fig: SimpleNamespace) -> SimpleNamespace:
    """Ears, eyes, brows, nose and mouth geometry (head units)."""
    a, chin = fig.a, fig.chin
    eye_y = d.uniform(0.0, 0.18)
    openness = d.uniform_by(d.choice((0.2, 0.65, 0.15)), [(0.35, 0.65), (0.8, 1.05), (1.1, 1.3)])
    eye_rx = d.uniform(0.15, 0.22)
    eye_up = d.uniform(0.09, 0.14) * openness
    iris_r = d.uniform(0.06, 0.095)
    nose_y = eye_y + d.uniform(0.32, 0.5)
    nose_ry = d.uniform(0.07, 0.12)
    mouth_y = np.minimum(nose_y + nose_ry + d.uniform(0.17, 0.35), chin - 0.3)
    expression = d.choice((0.3, 0.35, 0.2, 0.1, 0.05))  # neutral, smile, grin, open, frown
    curve = d.uniform_by(expression, [(-0.01, 0.02), (0.04, 0.1), (0.05, 0.12), (-0.01, 0.03),
                                      (-0.07, -0.03)])
    mouth_open = d.uniform_by(expression, [(0, 0), (0, 0.01), (0.04, 0.09), (0.06, 0.13), (0, 0)])
    return SimpleNamespace(
        ear_x=a * d.uniform(0.93, 0.99), ear_y=eye_y + d.uniform(0.05, 0.22),
        ear_rx=d.uniform(0.12, 0.2), ear_ry=d.uniform(0.2, 0.3),
        eye_x=d.uniform(0.3, 0.42) * a / 0.9, eye_y=eye_y, eye_rx=eye_rx, eye_up=eye_up,
        eye_down=d.uniform(0.06, 0.11) * openness, lash=d.uniform(0.015, 0.05),
        iris_r=iris_r, pupil_r=iris_r * d.uniform(0.4, 0.6), gaze=d.uniform(-0.05, 0.05),
        brow_x=d.uniform(-0.03, 0.05), brow_gap=d.uniform(0.1, 0.22),
        brow_len=d.uniform(0.13, 0.22), brow_thick=d.uniform(0.045, 0.1),
        brow_arch=d.uniform(0.0, 0.08), brow_tilt=d.uniform(-0.3, 0.3),
        nose_y=nose_y, nose_rx=d.uniform(0.09, 0.16), nose_ry=nose_ry,
        nose_bridge=d.uniform(0.2, 0.8) * d.chance(0.7), nose_top=eye_y + d.uniform(0.0, 0.12),
        nostril_r=d.uniform(0.02, 0.04),
        mouth_y=mouth_y, mouth_w=d.uniform(0.2, 0.38), mouth_curve=curve,
        mouth_open=mouth_open, lip_up=d.uniform(0.02, 0.05), lip_down=d.uniform(0.03, 0.075),
        teeth=d.uniform(0.02, 0.05) * (expression == 2),
    )


def _sample_hair(d: _Draws, fig: SimpleNamespace) -> SimpleNamespace:
    """Style, outline, fringe, parting and texture of the hair (and a possible beard)."""
    style = d.choice(_HAIR_STYLE_WEIGHTS)
    geo = {k: d.uniform_by(style, r) for k, r in _HAIR_RANGES.items()}
    top = fig.top
    is_style = lambda *names: np.isin(style, [_HAIR_STYLES.index(n) for n in names])  # noqa: E731
    short_hair = is_style("bald", "balding", "buzz", "short", "mop", "curly")
    bun = d.chance(0.4)
    tail_side = np.where(d.chance(0.5), 1.0, -1.0)
    return SimpleNamespace(
        style=style, present=~is_style("bald"), buzz=is_style("buzz"),
        width=geo["width"], height=geo["height"], lift=geo["lift"], bottom=geo["bottom"],
        fringe=geo["fringe"], side=geo["side"], back=geo["back"],
        has_back=geo["back"] > 0, long=is_style("long"),
        flare=d.uniform(0.0, 0.3), bump=d.uniform(0.06, 0.16) * is_style("curly"),
        slope=d.uniform(-0.4, 0.4) * d.chance(0.45), curve=d.uniform(-0.1, 0.35),
        jag=d.uniform(0.0, 0.12) * d.chance(0.5), jag_freq=d.uniform(4, 9), jag_phase=d.uniform(),
        part_x=d.uniform(-0.5, 0.5), crown=-(top * geo["height"] + geo["lift"]) * 1.3 - 0.25,
        strands=d.uniform(5, 12), strand_contrast=d.uniform(0.15, 0.45),
        curly=is_style("curly"), shadow=d.uniform(0.1, 0.3), tail=is_style("ponytail"),
        tail_x=np.where(bun, 0.0, tail_side * (fig.a + d.uniform(0.05, 0.25))),
        tail_y=np.where(bun, -top * geo["height"] - 0.1, d.uniform(-0.5, 0.1)),
        tail_rx=np.where(bun, d.uniform(0.3, 0.45), d.uniform(0.22, 0.35)),
        tail_ry=np.where(bun, d.uniform(0.25, 0.4), d.uniform(0.45, 0.8)),
        beard=d.chance(np.where(short_hair, 0.16, 0.02)), beard_top=d.uniform(-0.25, 0.0),
        beard_side=d.uniform(0.1, 0.6), moustache=d.chance(np.where(short_hair, 0.16, 0.02)),
    )


def _sample_clothes(d: _Draws, fig: SimpleNamespace) -> SimpleNamespace:
    """Shoulder width, height and slope, neckline (V or round), collar and stripes."""
    return SimpleNamespace(
        half_width=d.uniform(1.7, 2.6), height=d.uniform(1.0, 1.8), slope=d.uniform(0.1, 0.35),
        v_neck=d.chance(0.4), cut_w=fig.neck_w * d.uniform(1.0, 1.7),
        cut_depth=d.uniform(0.15, 0.7), cut_top=d.uniform(-0.15, 0.05),
        collar=d.uniform(0.0, 0.35) * d.chance(0.5),
        stripes=d.chance(0.25), stripe_freq=d.uniform(2.5, 6), stripe_duty=d.uniform(0.25, 0.6),
        stripe_phase=d.uniform(),
    )


def _sample_material_colours(d: _Draws, hair: SimpleNamespace) -> tuple[Tensor, np.ndarray]:
    """Colour of every material for every image: [N, materials, 3] in 0..255, and the index of
    each image's hair colour in `_HAIR_COLOURS`."""
    n = len(hair.present)
    tone = d.uniform(0, len(_SKIN_TONES) - 1)
    skin = np.stack([np.interp(tone, np.arange(len(_SKIN_TONES)), _SKIN_TONES[:, c])
                     for c in range(3)], axis=1)
    skin = skin * d.uniform(0.95, 1.05)[:, None] + np.stack(
        [d.uniform(-8, 8), d.uniform(-6, 6), d.uniform(-8, 8)], axis=1)
    hair_colour = d.choice(_HAIR_WEIGHTS)
    hair_rgb = d.jittered(_HAIR_COLOURS[hair_colour], 0.12)
    # A buzz cut shows the scalp through the stubble.
    hair_rgb = np.where(hair.buzz[:, None], 0.55 * hair_rgb + 0.45 * skin * 0.7, hair_rgb)
    natural_brow = np.array([45.0, 32.0, 25.0])
    brow = np.clip(0.5 * hair_rgb + 0.5 * natural_brow, 0, 255) * d.uniform(0.55, 0.9)[:, None]
    lips = np.where(d.chance(0.18)[:, None], d.colour(_LIPSTICKS, (1, 1, 1, 1), 0.1),
                    skin * 0.78 + np.array([40.0, -5.0, 0.0]))
    clothes = _hsv_colour(d.uniform(), d.uniform(0.15, 0.9), d.uniform(0.2, 0.95))
    trim = np.where(d.chance(0.5)[:, None],
                    _hsv_colour(d.uniform(), d.uniform(0.0, 0.9), d.uniform(0.1, 1.0)),
                    clothes * d.uniform(0.4, 0.7)[:, None])
    white = np.ones((n, 1)) * np.array([235.0, 232.0, 226.0]) * d.uniform(0.88, 1.0)[:, None]
    colours = {
        _M.SKIN: skin, _M.HAIR: hair_rgb, _M.EYE_WHITE: white,
        _M.IRIS: d.colour(_IRIS_COLOURS, _IRIS_WEIGHTS, 0.1),
        _M.PUPIL: np.array([18.0, 14.0, 14.0]), _M.LASH: brow * 0.5,
        _M.GLINT: np.array([255.0, 255.0, 255.0]),
        _M.BROW: brow, _M.NOSE: skin * 0.8, _M.NOSTRIL: skin * 0.42, _M.LIPS: lips,
        _M.MOUTH_INSIDE: np.array([75.0, 18.0, 24.0]), _M.TEETH: np.array([242.0, 238.0, 228.0]),
        _M.EAR: skin * 0.96, _M.EAR_INSIDE: skin * 0.72, _M.NECK: skin * 0.96,
        _M.CLOTHES: clothes, _M.TRIM: trim,
    }
    table = np.zeros((n, len(_M), 3))
    for material, rgb in colours.items():
        table[:, material] = rgb
    return torch.from_numpy(np.clip(table, 0, 255).astype(np.float32)), hair_colour


def _sample_background(d: _Draws) -> SimpleNamespace:
    """Gradient, colour clouds, stripes or checks, and a few random shapes."""
    n_shapes = 4
    gx, gy = _unit_vector(d)
    sx, sy = _unit_vector(d)
    return SimpleNamespace(
        base=_hsv_colour(d.uniform(), d.uniform(0.1, 0.9), d.uniform(0.25, 1.0)),
        second=_hsv_colour(d.uniform(), d.uniform(0.1, 0.9), d.uniform(0.2, 1.0)),
        gx=gx, gy=gy, gradient=d.uniform(0.2, 1.2), clouds=d.uniform(4, 30),
        stripes=d.chance(0.35), checks=d.chance(0.4), sx=sx, sy=sy,
        stripe_freq=d.uniform(1.5, 7), stripe_duty=d.uniform(0.2, 0.6), stripe_phase=d.uniform(),
        stripe_colour=_hsv_colour(d.uniform(), d.uniform(0.1, 0.9), d.uniform(0.2, 1.0)),
        stripe_mix=d.uniform(0.15, 0.6),
        shapes=[SimpleNamespace(
            present=d.chance(0.55), box=d.chance(0.5), x=d.uniform(-1, 1), y=d.uniform(-1, 1),
            rx=d.uniform(0.08, 0.5), ry=d.uniform(0.08, 0.5),
            colour=_hsv_colour(d.uniform(), d.uniform(0.0, 0.9), d.uniform(0.15, 1.0)),
            alpha=d.uniform(0.3, 1.0)) for _ in range(n_shapes)],
    )


def _sample_camera(d: _Draws) -> SimpleNamespace:
    """Exposure / white balance, blur and sensor noise strength."""
    white_balance = np.stack([d.uniform(0.9, 1.1) for _ in range(3)], axis=1)
    gain = white_balance * d.uniform(0.85, 1.12)[:, None]
    return SimpleNamespace(gain=gain, blur=d.uniform(0.0, 0.22) * d.chance(0.6),
                           noise=d.uniform(1.0, 8.0))


# ----------------------------------------------------------------------------- drawing


class _Frame:
    """Per-pixel coordinates and fields of a canvas or window ([N,H,W] each), computed on
    first use: head frame (u across the face, v down it, 0 at the head centre), body frame
    (same origin and scale, its own smaller roll), directional light over each, and noise."""

    def __init__(self, fig: SimpleNamespace, x: Tensor, y: Tensor,
                 noise: tuple[Tensor, Tensor], take: Callable[[Tensor], Tensor]) -> None:
        self._fig, self._dx, self._dy = fig, x - fig.x, y - fig.y  # [N,1,W] and [N,H,1]
        self._inv = 1.0 / fig.scale
        self._noise, self._take = noise, take

    def _rotate(self, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        return (self._dx * (cos * self._inv) + self._dy * (sin * self._inv),
                self._dy * (cos * self._inv) - self._dx * (sin * self._inv))

    @cached_property
    def _head(self) -> tuple[Tensor, Tensor]:
        return self._rotate(self._fig.cos_h, self._fig.sin_h)

    @cached_property
    def _body(self) -> tuple[Tensor, Tensor]:
        return self._rotate(self._fig.cos_b, self._fig.sin_b)

    u = property(lambda self: self._head[0])
    v = property(lambda self: self._head[1])
    ub = property(lambda self: self._body[0])
    vb = property(lambda self: self._body[1])

    @cached_property
    def light_h(self) -> Tensor:
        fig = self._fig
        return 1.0 + (fig.light_x * self.u + fig.light_y * self.v) * fig.light

    @cached_property
    def light_b(self) -> Tensor:
        fig = self._fig
        return 1.0 + (fig.light_x * self.ub + fig.light_y * self.vb) * (fig.light * 0.5)

    def within(self, win: _Window, size: int) -> _Frame:
        """The same frame, restricted to a window of a size x size canvas."""
        centres = _pixel_centres(size)
        return _Frame(self._fig, centres[win.cols], centres[win.rows], self._noise, win.take)

    @cached_property
    def smooth(self) -> Tensor:
        """Low-frequency noise, about N(0, 1)."""
        return self._take(self._noise[0])

    @cached_property
    def fine(self) -> Tensor:
        """High-frequency noise, about N(0, 1)."""
        return self._take(self._noise[1])


@dataclass
class _Canvas:
    """What is painted where (material ids) and how bright it is (multiplier)."""

    material: Tensor  # uint8 [N,S,S]
    shade: Tensor  # float32 [N,S,S]

    def paint(self, mask: Tensor, material: _M, shade: Tensor | float) -> None:
        self.material.masked_fill_(mask, int(material))
        if isinstance(shade, Tensor):
            self.shade = torch.where(mask, shade, self.shade)
        else:
            self.shade.masked_fill_(mask, shade)


def _pixel_centres(size: int) -> Tensor:
    """Image coordinates in [-1, 1] of the pixel centres of a size x size grid."""
    return (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0


def _make_frame(fig: SimpleNamespace, rnd: _SeedRandomness, size: int) -> _Frame:
    """The frame of the whole supersampled canvas."""
    centres = _pixel_centres(size)
    fine = _upsample(rnd.fine, size)[:, 0].clamp_(-_MAX_NOISE, _MAX_NOISE)
    noise = (_upsample(rnd.smooth, size)[:, 0], fine)
    return _Frame(fig, centres.view(1, 1, size), centres.view(1, size, 1), noise, lambda t: t)


@dataclass
class _Window:
    """The same-sized pixel rectangle of every image of a chunk, placed per image.

    Small parts are drawn inside a window around them instead of over the whole canvas. A
    pixel's value never depends on the window (only on its position and its image), so the
    bytes stay independent of the batch, provided every part drawn lies inside its window.
    """

    rows: Tensor  # [N,H,1] canvas rows
    cols: Tensor  # [N,1,W] canvas columns
    index: Tensor  # [N,H*W] positions in each flattened [S,S] image (gather is the fast path)

    def take(self, t: Tensor) -> Tensor:
        n, height, width = self.index.shape[0], self.rows.shape[1], self.cols.shape[2]
        return t.view(n, -1).gather(1, self.index).view(n, height, width)

    def put(self, t: Tensor, values: Tensor) -> None:
        t.view(t.shape[0], -1).scatter_(1, self.index, values.reshape(t.shape[0], -1))


def _window(fig: SimpleNamespace, u_half: np.ndarray, v_lo: np.ndarray, v_hi: np.ndarray,
            size: int, body: bool = False) -> _Window:
    """Window holding, for each image, the box |u| <= u_half, v_lo <= v <= v_hi of the head
    frame (or of the body frame), as far as it lies inside the image."""
    cu = np.stack([-u_half, u_half, -u_half, u_half], axis=1)
    cv = np.stack([v_lo, v_lo, v_hi, v_hi], axis=1)
    cos, sin = (fig.cos_b, fig.sin_b) if body else (fig.cos_h, fig.sin_h)
    r, cos, sin = fig.scale[:, None], cos[:, None], sin[:, None]
    x = fig.x[:, None] + r * (cu * cos - cv * sin)  # inverse of the frame's rotation
    y = fig.y[:, None] + r * (cu * sin + cv * cos)
    to_pixel = lambda t: t * (size / 2.0) + (size / 2.0 - 0.5)  # noqa: E731
    # One pixel of slack each side covers float32 rounding of the per-pixel coordinates.
    col0 = np.clip(np.floor(to_pixel(x.min(1))) - 1, 0, size - 1)
    col1 = np.clip(np.ceil(to_pixel(x.max(1))) + 1, 0, size - 1)
    row0 = np.clip(np.floor(to_pixel(y.min(1))) - 1, 0, size - 1)
    row1 = np.clip(np.ceil(to_pixel(y.max(1))) + 1, 0, size - 1)
    width = int(max(1, np.max(col1 - col0) + 1))
    height = int(max(1, np.max(row1 - row0) + 1))
    col0 = torch.from_numpy(np.minimum(col0, size - width).astype(np.int64)).view(-1, 1, 1)
    row0 = torch.from_numpy(np.minimum(row0, size - height).astype(np.int64)).view(-1, 1, 1)
    rows = row0 + torch.arange(height).view(1, -1, 1)
    cols = col0 + torch.arange(width).view(1, 1, -1)
    return _Window(rows, cols, (rows * size + cols).view(len(u_half), -1))


def _draw_in_window(c: _Canvas, f: _Frame, win: _Window, size: int,
                    draw: Callable[[_Canvas, _Frame], None]) -> None:
    """Run draw(canvas, frame) on the window's pixels only, then write them back."""
    sub_canvas = _Canvas(win.take(c.material), win.take(c.shade))
    draw(sub_canvas, f.within(win, size))
    win.put(c.material, sub_canvas.material)
    win.put(c.shade, sub_canvas.shade)


def _ears_window(fig: SimpleNamespace, ft: SimpleNamespace, size: int) -> _Window:
    return _window(fig, ft.ear_x + ft.ear_rx + _MARGIN, ft.ear_y - ft.ear_ry - _MARGIN,
                   ft.ear_y + ft.ear_ry + _MARGIN, size)


def _head_window(fig: SimpleNamespace, hair: SimpleNamespace, size: int) -> _Window:
    """The head and the hair drawn over it (see _head_shape and _hair_outline)."""
    swell = np.sqrt(1.0 + _MAX_NOISE * hair.bump)
    u_half = np.maximum(fig.a, fig.a * hair.width * swell)
    top = np.minimum(-fig.top, -hair.lift - fig.top * hair.height * swell)
    return _window(fig, u_half + _MARGIN, top - _MARGIN,
                   np.maximum(fig.chin, hair.bottom) + _MARGIN, size)


def _neck_window(fig: SimpleNamespace, size: int) -> _Window:
    return _window(fig, fig.neck_w * 1.6 + _MARGIN, np.zeros_like(fig.neck_w) - _MARGIN,
                   np.full_like(fig.neck_w, _FAR), size, body=True)


def _torso_window(fig: SimpleNamespace, cl: SimpleNamespace, size: int) -> _Window:
    """Everything of the clothes lies below the shoulder line (see _draw_clothes)."""
    return _window(fig, cl.half_width + _MARGIN, fig.shoulder_y - _MARGIN,
                   np.full_like(fig.shoulder_y, _FAR), size, body=True)


def _upper_face_window(fig: SimpleNamespace, ft: SimpleNamespace, size: int) -> _Window:
    """Eyes (with lashes) and brows (with arch, tilt and thickness)."""
    yaw = np.abs(fig.yaw)
    eyes = yaw + ft.eye_x + ft.eye_rx + ft.lash
    brows = yaw + ft.eye_x + ft.brow_x + ft.brow_len
    brow_top = (ft.eye_y - ft.eye_up - ft.brow_gap - ft.brow_arch
                - np.abs(ft.brow_tilt) * ft.brow_len - ft.brow_thick)
    brow_bottom = (ft.eye_y - ft.eye_up - ft.brow_gap + np.abs(ft.brow_tilt) * ft.brow_len
                   + ft.brow_thick)
    eye_top = ft.eye_y - ft.eye_up - ft.lash
    return _window(fig, np.maximum(eyes, brows) + _MARGIN,
                   np.minimum(brow_top, eye_top) - _MARGIN,
                   np.maximum(ft.eye_y + ft.eye_down, brow_bottom) + _MARGIN, size)


def _lower_face_window(fig: SimpleNamespace, ft: SimpleNamespace, hair: SimpleNamespace,
                       size: int) -> _Window:
    """Nose, mouth, moustache, and for bearded faces the head below the beard line."""
    yaw = np.abs(fig.yaw)
    nose = yaw * 1.3 + ft.nose_rx
    mouth = yaw + ft.mouth_w * 1.1
    mouth_bottom = ft.mouth_y - np.minimum(ft.mouth_curve, 0) + ft.mouth_open + ft.lip_down
    beard_top = ft.mouth_y + hair.beard_top - hair.beard_side
    u_half = np.where(hair.beard, fig.a, np.maximum(nose, mouth)) + _MARGIN
    top = np.minimum(ft.nose_top, ft.mouth_y - 0.2 - np.maximum(ft.mouth_curve, 0) - 0.05)
    top = np.where(hair.beard, np.minimum(top, beard_top), top)
    bottom = np.where(hair.beard, fig.chin, np.maximum(mouth_bottom, ft.nose_y + ft.nose_ry))
    return _window(fig, u_half, top - _MARGIN, bottom + _MARGIN, size)


def _upsample(grid: Tensor, size: int) -> Tensor:
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)


def _tri(t: Tensor) -> Tensor:
    """Triangle wave with period 1 in [0, 1]: stripes without trigonometry."""
    return (t - torch.floor(t) - 0.5).abs_().mul_(2.0)


def _ellipse(du: Tensor, dv: Tensor, rx: Tensor | float, ry: Tensor | float) -> Tensor:
    """Normalised squared radius: < 1 inside an axis-aligned ellipse."""
    x = du / rx
    y = dv / ry
    return x * x + y * y


def _head_shape(f: _Frame, fig: SimpleNamespace) -> Tensor:
    """0 at the head centre, 1 on its outline: ellipse/superellipse blend, narrowing jaw."""
    below = (f.v / fig.chin).clamp_(0.0, 1.0)
    half_width = fig.a * (1.0 - fig.jaw * below * below)
    x = f.u / half_width
    y = f.v / torch.where(f.v < 0, fig.top, fig.chin)
    x2, y2 = x * x, y * y
    return (1.0 - fig.square) * (x2 + y2) + fig.square * torch.sqrt(x2 * x2 + y2 * y2)


def _hair_outline(f: _Frame, fig: SimpleNamespace, hair: SimpleNamespace,
                  half_width: Tensor, bottom: Tensor) -> Tensor:
    """Inside the hair silhouette: elliptical crown, straight sides, rounded lower edge."""
    crown = (f.v + hair.lift).clamp_(max=0.0) / (fig.top * hair.height)
    x = f.u / half_width
    x2 = x * x
    inside = x2 + crown * crown < 1.0 + hair.bump * f.fine
    return inside & (f.v < bottom - 0.25 * x2)


def _hair_shade(f: _Frame, hair: SimpleNamespace) -> Tensor:
    """Strands radiating from the parting, or curls from noise; lit like the head."""
    direction = (f.u - hair.part_x) / (f.v - hair.crown)
    strands = _tri(direction * hair.strands + 0.35 * f.fine)
    texture = torch.where(hair.curly, (0.5 + 0.4 * f.fine).clamp_(0.0, 1.0), strands)
    return f.light_h * (1.0 - hair.strand_contrast + hair.strand_contrast * texture)


def _back_hair_silhouette(f: _Frame, fig: SimpleNamespace, hair: SimpleNamespace) -> Tensor:
    """Bob and long hair behind the head, widening a little as it falls."""
    half_width = fig.a * hair.width * (1.0 + hair.flare * f.v.clamp(min=0.0))
    return _hair_outline(f, fig, hair, half_width, hair.back) & hair.has_back


def _draw_back_hair(c: _Canvas, f: _Frame, hair: SimpleNamespace, back: Tensor | None,
                    hair_light: Tensor) -> None:
    """Hair behind the head (darker, it is in the head's shadow): long, bob, ponytail, bun."""
    if back is not None:
        c.paint(back, _M.HAIR, hair_light * 0.8)
    if bool(hair.tail.any()):
        tail = (_ellipse(f.u - hair.tail_x, f.v - hair.tail_y, hair.tail_rx, hair.tail_ry)
                < 1.0 + hair.bump * f.fine) & hair.tail
        c.paint(tail, _M.HAIR, hair_light * 0.85)


def _draw_long_hair_over_shoulders(c: _Canvas, f: _Frame, fig: SimpleNamespace,
                                   hair: SimpleNamespace, back: Tensor | None,
                                   hair_light: Tensor) -> None:
    """Long hair falls in front of the shoulders, on either side of the neck."""
    if back is None or not bool(hair.long.any()):
        return
    strands = back & hair.long & (f.ub.abs() > fig.neck_w * 1.15) & (f.vb > fig.chin)
    c.paint(strands, _M.HAIR, hair_light * 0.9)


def _draw_neck(c: _Canvas, f: _Frame, fig: SimpleNamespace) -> None:
    """A column from under the head into the shoulders, shadowed under the jaw."""
    flare = (f.vb - fig.shoulder_y + 0.35).clamp_(0.0, 0.6)
    mask = (f.ub.abs() < fig.neck_w * (1.0 + 1.5 * flare * flare)) & (f.vb > 0)
    jaw_shadow = ((f.vb - fig.chin * 0.85) / 0.6).clamp_(0.0, 1.0)
    c.paint(mask, _M.NECK, f.light_b * (0.7 + 0.3 * jaw_shadow))


def _draw_clothes(c: _Canvas, f: _Frame, fig: SimpleNamespace, cl: SimpleNamespace) -> None:
    """Shoulders with a V or round neckline, sometimes a collar band and stripes."""
    rel = f.vb - fig.shoulder_y - cl.slope * f.ub.abs()  # shoulders fall away from the neck
    x = f.ub / cl.half_width
    top = (rel - cl.height).clamp_(max=0.0) / cl.height
    torso = x * x + top * top < 1.0
    across = f.ub.abs() / cl.cut_w
    down = ((rel - cl.cut_top) / cl.cut_depth).clamp_(min=0.0)
    neckline = torch.where(cl.v_neck, across + down, across * across + down * down)
    chest = torso & (neckline < 1.0)
    collar = (neckline < 1.0 + cl.collar) & ~chest
    stripes = (_tri(rel * cl.stripe_freq + cl.stripe_phase) < cl.stripe_duty) & cl.stripes
    shade = f.light_b * (1.0 - 0.25 * x * x) * (1.0 + 0.05 * f.smooth)
    c.paint(torso, _M.CLOTHES, shade)
    c.paint(torso & (collar | stripes), _M.TRIM, shade)
    c.paint(chest, _M.NECK, f.light_b * 0.9)


def _draw_ears(c: _Canvas, f: _Frame, ft: SimpleNamespace) -> None:
    """Two ears behind the head's edge (drawn first, so the head hides their inner half)."""
    du = f.u.abs() - ft.ear_x
    d2 = _ellipse(du, f.v - ft.ear_y, ft.ear_rx, ft.ear_ry)
    c.paint(d2 < 1.0, _M.EAR, f.light_h * 0.95)
    c.paint((d2 < 0.35) & (du > -0.02), _M.EAR_INSIDE, f.light_h)


def _draw_head(c: _Canvas, f: _Frame, fig: SimpleNamespace, head: Tensor) -> None:
    """The face: lit from one side, darker towards the rim."""
    shade = f.light_h * (1.0 - fig.rim * head) * (1.0 + 0.03 * f.smooth)
    c.paint(head < 1.0, _M.SKIN, shade)


def _draw_beard(c: _Canvas, f: _Frame, fig: SimpleNamespace, ft: SimpleNamespace,
                hair: SimpleNamespace, head: Tensor) -> None:
    """Beards along the jaw and moustaches (labelled hair)."""
    if not bool((hair.beard | hair.moustache).any()):
        return
    x = f.u / fig.a
    beard_line = ft.mouth_y + hair.beard_top - hair.beard_side * x * x  # rises towards the ears
    beard = (head < 1.0) & (f.v > beard_line) & hair.beard
    moustache = ((f.u - fig.yaw).abs() < ft.mouth_w * 1.1) & (
        f.v > ft.mouth_y - 0.2) & (f.v < ft.mouth_y - 0.02) & hair.moustache
    c.paint(beard | moustache, _M.HAIR, f.light_h * (0.8 + 0.15 * f.fine))


def _draw_nose(c: _Canvas, f: _Frame, fig: SimpleNamespace, ft: SimpleNamespace) -> None:
    """A rounded tip, sometimes with a bridge wedge, and two nostrils; lit side brighter."""
    du = f.u - fig.yaw * 1.3
    tip = _ellipse(du, f.v - ft.nose_y, ft.nose_rx, ft.nose_ry) < 1.0
    along = (f.v - ft.nose_top) / (ft.nose_y - ft.nose_top)
    bridge = (du.abs() < ft.nose_rx * ft.nose_bridge * along) & (along > 0) & (along < 1)
    side = torch.where(du * fig.light_x > 0, 1.08, 0.9)
    c.paint(tip | bridge, _M.NOSE, f.light_h * side)
    nostril = _ellipse(du.abs() - ft.nose_rx * 0.5, f.v - ft.nose_y - ft.nose_ry * 0.35,
                       ft.nostril_r, ft.nostril_r * 0.7) < 1.0
    c.paint(nostril, _M.NOSTRIL, 1.0)


def _draw_mouth(c: _Canvas, f: _Frame, fig: SimpleNamespace, ft: SimpleNamespace) -> None:
    """Lips around a smile/frown curve; open mouths show a dark inside and upper teeth."""
    t = (f.u - fig.yaw) / ft.mouth_w
    body = (1.0 - t * t).clamp_(min=0.0)
    thickness = torch.sqrt(body)  # round ends
    mid = f.v - ft.mouth_y + ft.mouth_curve * t * t
    upper = mid + (ft.mouth_open * 0.4 + 0.012) * thickness  # > 0 below the upper lip's edge
    lower = mid - (ft.mouth_open + 0.004) * thickness  # < 0 above the lower lip's edge
    inside_mouth = (upper > 0) & (lower < 0) & (body > 0)
    lips = (mid > -(ft.mouth_open * 0.4 + ft.lip_up) * thickness) & (
        mid < (ft.mouth_open + ft.lip_down) * thickness) & (body > 0)
    c.paint(lips, _M.LIPS, f.light_h)
    c.paint(inside_mouth, _M.MOUTH_INSIDE, 1.0)
    c.paint(inside_mouth & (upper < ft.teeth * thickness), _M.TEETH, 1.0)


def _draw_eyes(c: _Canvas, f: _Frame, fig: SimpleNamespace, ft: SimpleNamespace) -> None:
    """Almond eye whites with a lash line on top, iris, pupil and a glint."""
    side = torch.where(f.u > fig.yaw, 1.0, -1.0)
    du = (f.u - fig.yaw) * side - ft.eye_x  # mirrored: both eyes share one evaluation
    dv = f.v - ft.eye_y
    above = dv < 0
    white = _ellipse(du, dv, ft.eye_rx, torch.where(above, ft.eye_up, ft.eye_down)) < 1.0
    lash = (_ellipse(du, dv, ft.eye_rx + ft.lash * 0.6,
                     torch.where(above, ft.eye_up + ft.lash, ft.eye_down)) < 1.0) & (
        dv < ft.eye_down * 0.3)
    c.paint(lash, _M.LASH, 1.0)
    c.paint(white, _M.EYE_WHITE, 1.0)
    iris_d2 = _ellipse(du - ft.gaze * side, dv, ft.iris_r, ft.iris_r)
    c.paint(white & (iris_d2 < 1.0), _M.IRIS, 1.0)
    c.paint(white & (iris_d2 < (ft.pupil_r / ft.iris_r) ** 2), _M.PUPIL, 1.0)
    glint = _ellipse(du - ft.gaze * side + ft.iris_r * 0.35, dv + ft.iris_r * 0.35,
                     ft.iris_r * 0.3, ft.iris_r * 0.3) < 1.0
    c.paint(white & glint, _M.GLINT, 1.0)


def _draw_brows(c: _Canvas, f: _Frame, fig: SimpleNamespace, ft: SimpleNamespace) -> None:
    """Arched strokes above the eyes; the tilt makes them calm, stern or worried."""
    du = (f.u - fig.yaw).abs() - ft.eye_x - ft.brow_x
    t = du / ft.brow_len
    t2 = t * t
    centre = ft.eye_y - ft.eye_up - ft.brow_gap - ft.brow_arch * (1.0 - t2) + ft.brow_tilt * du
    half = ft.brow_thick * (1.0 - 0.45 * t2) * 0.5
    c.paint(((f.v - centre).abs() < half) & (t2 < 1.0), _M.BROW, f.light_h)


def _draw_front_hair(c: _Canvas, f: _Frame, fig: SimpleNamespace, hair: SimpleNamespace,
                     head: Tensor, hair_light: Tensor) -> None:
    """Hair over the head: everything in the silhouette except the face window under the
    fringe; it hides the ears when the sides come down. Casts a shadow on the forehead."""
    u = f.u - fig.yaw
    fringe = (hair.fringe + hair.slope * u + hair.curve * u * u
              + hair.jag * _tri(u * hair.jag_freq + hair.jag_phase))
    below_fringe = f.v - fringe
    face_opening = (below_fringe > 0) & (u.abs() < fig.a * hair.side)
    silhouette = _hair_outline(f, fig, hair, fig.a * hair.width, hair.bottom)
    on_head = head < 1.0
    cover = (silhouette | (on_head & (f.v < hair.bottom))) & ~face_opening & hair.present
    shadow = 1.0 - hair.shadow * (1.0 - below_fringe * 4.0).clamp_(0.0, 1.0)
    c.shade = torch.where(face_opening & on_head & hair.present, c.shade * shadow, c.shade)
    c.paint(cover, _M.HAIR, hair_light)


def _paint_scene(f: _Frame, p: SimpleNamespace, q: SimpleNamespace) -> _Canvas:
    """All parts, back to front, into a supersampled canvas (p: tensors, q: the same
    parameters in numpy, to place the windows of the parts that need not cover the canvas)."""
    n, size = f.u.shape[0], f.u.shape[-1]
    c = _Canvas(torch.zeros(n, size, size, dtype=torch.uint8), torch.ones(n, size, size))

    def in_window(win: _Window, draw: Callable[[_Canvas, _Frame], None]) -> None:
        _draw_in_window(c, f, win, size, draw)

    back = _back_hair_silhouette(f, p.fig, p.hair) if bool(p.hair.has_back.any()) else None
    hair_behind = back is not None or bool(p.hair.tail.any())
    hair_light = _hair_shade(f, p.hair) if hair_behind else None
    _draw_back_hair(c, f, p.hair, back, hair_light)
    in_window(_neck_window(q.fig, size), lambda wc, wf: _draw_neck(wc, wf, p.fig))
    in_window(_torso_window(q.fig, q.clothes, size),
              lambda wc, wf: _draw_clothes(wc, wf, p.fig, p.clothes))
    _draw_long_hair_over_shoulders(c, f, p.fig, p.hair, back, hair_light)
    in_window(_ears_window(q.fig, q.features, size),
              lambda wc, wf: _draw_ears(wc, wf, p.features))
    head_window = _head_window(q.fig, q.hair, size)
    in_window(head_window, lambda wc, wf: _draw_head(wc, wf, p.fig, _head_shape(wf, p.fig)))
    in_window(_lower_face_window(q.fig, q.features, q.hair, size),
              lambda wc, wf: _draw_lower_face(wc, wf, p))
    in_window(_upper_face_window(q.fig, q.features, size),
              lambda wc, wf: _draw_upper_face(wc, wf, p))
    in_window(head_window, lambda wc, wf: _draw_front_hair(
        wc, wf, p.fig, p.hair, _head_shape(wf, p.fig), _hair_shade(wf, p.hair)))
    return c


def _draw_lower_face(c: _Canvas, f: _Frame, p: SimpleNamespace) -> None:
    _draw_beard(c, f, p.fig, p.features, p.hair, _head_shape(f, p.fig))
    _draw_nose(c, f, p.fig, p.features)
    _draw_mouth(c, f, p.fig, p.features)


def _draw_upper_face(c: _Canvas, f: _Frame, p: SimpleNamespace) -> None:
    _draw_eyes(c, f, p.fig, p.features)
    _draw_brows(c, f, p.fig, p.features)


def _paint_background(bg: SimpleNamespace, clouds: Tensor, size: int) -> Tensor:
    """[N,3,R,R] background at the output resolution (it is flat within a block)."""
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    rgb = lambda a: t(a).view(-1, 3, 1, 1)  # noqa: E731
    col = lambda a: t(a).view(-1, 1, 1, 1)  # noqa: E731
    centres = _pixel_centres(size)
    x, y = centres.view(1, 1, 1, size), centres.view(1, 1, size, 1)
    ramp = (0.5 + (x * col(bg.gx) + y * col(bg.gy)) * col(bg.gradient * 0.5)).clamp_(0.0, 1.0)
    out = rgb(bg.base) + (rgb(bg.second) - rgb(bg.base)) * ramp
    out = out + _upsample(clouds, size) * col(bg.clouds)
    phase = (x * col(bg.sx) + y * col(bg.sy)) * col(bg.stripe_freq) + col(bg.stripe_phase)
    band = _tri(phase) < col(bg.stripe_duty)
    across = _tri((y * col(bg.sx) - x * col(bg.sy)) * col(bg.stripe_freq)) < col(bg.stripe_duty)
    band = torch.where(col(bg.checks).bool(), band ^ across, band) & col(bg.stripes).bool()
    mix = col(bg.stripe_mix)
    out = torch.where(band, out * (1.0 - mix) + rgb(bg.stripe_colour) * mix, out)
    for s in bg.shapes:
        dx, dy = (x - col(s.x)) / col(s.rx), (y - col(s.y)) / col(s.ry)
        box = torch.maximum(dx.abs(), dy.abs())
        inside = torch.where(col(s.box).bool(), box, dx * dx + dy * dy)
        alpha = col(s.alpha)
        shape = (inside < 1.0) & col(s.present).bool()
        out = torch.where(shape, out * (1.0 - alpha) + rgb(s.colour) * alpha, out)
    return out.clamp_(0.0, 255.0)


def _majority_labels(material: Tensor, factor: int) -> Tensor:
    """Per-block mode of the classes painted in each block (ties go to the top-most part).

    Each of the factor**2 samples of a block scores (how many samples share its class) * 16 +
    its class rank; the best score's low bits are the winning rank. Far cheaper than one-hot
    counting over all classes at full resolution.
    """
    n, size = material.shape[0], material.shape[-1]
    res = size // factor
    ranks = _RANK_OF_MATERIAL[material.long()]
    samples = ranks.view(n, res, factor, res, factor).permute(0, 2, 4, 1, 3).reshape(
        n, factor * factor, 1, res, res)
    agree = (samples == samples.transpose(1, 2)).sum(2, dtype=torch.int16)
    best = (agree * 16 + samples[:, :, 0]).amax(1)
    return _CLASS_OF_RANK[(best & 15).long()]


def _average_colours(c: _Canvas, colours: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """Block-averaged foreground colour and the share of each block that is background."""
    n, size = c.material.shape[0], c.material.shape[-1]
    # A fourth "colour" channel is 1 for background only: pooled, it is the uncovered share.
    table = torch.cat([colours, torch.zeros(n, len(_M), 1)], dim=2)
    table[:, _M.BACKGROUND, 3] = 1.0
    index = c.material.view(n, 1, -1).long().expand(n, 4, -1)
    rgba = torch.gather(table.transpose(1, 2), 2, index).view(n, 4, size, size)
    rgba[:, :3] *= c.shade.unsqueeze(1)
    pooled = F.avg_pool2d(rgba, factor)
    return pooled[:, :3], pooled[:, 3:]


def _blur(img: Tensor, weight: Tensor) -> Tensor:
    """Separable 3-tap blur [w, 1-2w, w] per image, built from shifts (exact, per image)."""
    w = weight.view(-1, 1, 1, 1)
    padded = F.pad(img, (1, 1, 0, 0), mode="replicate")
    img = padded[..., 1:-1] * (1.0 - 2.0 * w) + (padded[..., :-2] + padded[..., 2:]) * w
    padded = F.pad(img, (0, 0, 1, 1), mode="replicate")
    return (padded[..., 1:-1, :] * (1.0 - 2.0 * w)
            + (padded[..., :-2, :] + padded[..., 2:, :]) * w)


def _apply_camera(img: Tensor, cam: SimpleNamespace, sensor: Tensor) -> Tensor:
    """Exposure and white balance, lens blur, sensor noise, 8-bit quantisation."""
    img = img * torch.from_numpy(cam.gain.astype(np.float32)).view(-1, 3, 1, 1)
    img = _blur(img, torch.from_numpy(cam.blur.astype(np.float32)))
    img = img + sensor * torch.from_numpy(cam.noise.astype(np.float32)).view(-1, 1, 1, 1)
    return img.round_().clamp_(0.0, 255.0).to(torch.uint8)


@dataclass
class _Scene:
    """Every parameter of a chunk's images, drawn from their seeds."""

    rnd: _SeedRandomness
    q: SimpleNamespace  # figure, features, hair and clothes, numpy [N] each
    colours: Tensor
    hair_colour: np.ndarray
    background: SimpleNamespace
    camera: SimpleNamespace


def _draw_scene(seeds: Sequence[int], resolution: int) -> _Scene:
    rnd = _draw_seed_randomness(seeds, resolution)
    d = _Draws(rnd.uniforms)
    fig = _sample_figure(d)  # the order of these calls fixes which uniform means what
    q = SimpleNamespace(fig=fig, features=_sample_features(d, fig), hair=_sample_hair(d, fig),
                        clothes=_sample_clothes(d, fig))
    colours, hair_colour = _sample_material_colours(d, q.hair)
    return _Scene(rnd, q, colours, hair_colour, _sample_background(d), _sample_camera(d))


def _scene_attributes(scene: _Scene) -> dict[str, np.ndarray]:
    """The value index of each of `ATTRIBUTES` per image, read off its parameters."""
    hair, bg = scene.q.hair, scene.background
    return {
        "hair_colour": _HAIR_COLOUR_GROUP[scene.hair_colour],
        "hair_length": _HAIR_LENGTH_OF_STYLE[hair.style],
        "facial_hair": (hair.beard | hair.moustache).astype(np.int64),
        "clothes": scene.q.clothes.stripes.astype(np.int64),
        "background": np.where(bg.stripes, np.where(bg.checks, 2, 1), 0),
    }


def _render_chunk(seeds: Sequence[int], resolution: int, factor: int) -> tuple[Tensor, Tensor]:
    """Draw parameters, paint the supersampled scene, reduce it, add background and camera."""
    scene = _draw_scene(seeds, resolution)
    q, rnd = scene.q, scene.rnd
    p = SimpleNamespace(**{k: _as_columns(v) for k, v in vars(q).items()})
    size = resolution * factor
    canvas = _paint_scene(_make_frame(p.fig, rnd, size), p, q)
    labels = _majority_labels(canvas.material, factor)
    foreground, uncovered = _average_colours(canvas, scene.colours, factor)
    image = foreground + _paint_background(scene.background, rnd.background, resolution) * uncovered
    return _apply_camera(image, scene.camera, rnd.sensor), labels
