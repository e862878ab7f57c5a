"""The faces world: determinism, coverage of every class, image/label alignment, validation."""

import pytest
import torch

from datasetgan.errors import DatasetGANError
from datasetgan.labels import LabelClass
from datasetgan.worlds import WORLD_NAMES, get_world
from datasetgan.worlds.faces import FacesWorld


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: extra threads only add overhead (and stall on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world() -> FacesWorld:
    return FacesWorld()


@pytest.fixture(scope="module")
def batch(world):
    """300 images at 64 px (rendered in three calls): shared by the slower checks."""
    parts = [world.render(range(start, start + 100), 64) for start in (0, 100, 200)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def test_registry_and_metadata(world):
    assert WORLD_NAMES == ("faces",)
    assert isinstance(get_world("faces"), FacesWorld)
    assert world.name == "faces"
    names = [c.name for c in world.classes]
    for required in ("background", "skin", "hair", "eye", "eyebrow", "nose", "mouth", "ear",
                     "neck", "clothes"):
        assert required in names
    assert names[0] == "background" and world.classes[0].color == (0, 0, 0)
    assert all(isinstance(c, LabelClass) for c in world.classes)
    assert len({c.color for c in world.classes}) == len(world.classes)


def test_unknown_world_lists_known_ones():
    with pytest.raises(DatasetGANError, match="faces"):
        get_world("mars")


def test_seed_ranges_disjoint_and_in_bounds(world):
    ranges = world.seed_ranges
    assert {"gan_train", "real_train", "real_test"} <= set(ranges)
    spans = sorted((r.start, r.stop) for r in ranges.values())
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        assert stop <= start
    assert spans[0][0] >= 0 and spans[-1][1] <= 2**31


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_shapes_and_dtypes(world, resolution):
    images, labels = world.render([7, 8], resolution)
    assert images.shape == (2, 3, resolution, resolution) and images.dtype == torch.uint8
    assert labels.shape == (2, resolution, resolution) and labels.dtype == torch.uint8
    assert int(labels.max()) < len(world.classes)


def test_same_seed_same_bytes_in_any_batch(world):
    images, labels = world.render([5, 17, 99], 64)
    again_images, again_labels = world.render([5, 17, 99], 64)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    # Other neighbours, other positions, and a batch long enough to span several chunks.
    seeds = list(range(1000, 1040))
    seeds[3], seeds[21], seeds[38] = 99, 5, 17
    mixed_images, mixed_labels = world.render(seeds, 64)
    for i, j in ((0, 21), (1, 38), (2, 3)):
        assert torch.equal(images[i], mixed_images[j])
        assert torch.equal(labels[i], mixed_labels[j])
    alone_images, alone_labels = world.render([17], 64)
    assert torch.equal(alone_images[0], images[1]) and torch.equal(alone_labels[0], labels[1])


def test_same_bytes_with_more_threads(world):
    # Work split across threads must not change a byte (4 images: enough to be split).
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = world.render(range(20, 24), 64)
        torch.set_num_threads(2)
        two = world.render(range(20, 24), 64)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_different_seeds_differ(world):
    images, _ = world.render([1, 2], 64)
    assert not torch.equal(images[0], images[1])


def test_every_class_appears(world, batch):
    _, labels = batch
    counts = torch.bincount(labels.flatten().long(), minlength=len(world.classes))
    missing = [c.name for c, n in zip(world.classes, counts) if n == 0]
    assert not missing, f"classes never drawn in 300 images: {missing}"


def test_hair_hides_ears_in_some_images_only(batch):
    _, labels = batch
    ears = (labels == 7).flatten(1).any(1).float().mean()
    assert 0.2 < ears < 0.85


def _within_class_spread(images: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """Sum over images and classes of squared distances of pixel colours to their class mean."""
    x = images.float().flatten(2)  # [N,3,P]
    one_hot = torch.nn.functional.one_hot(labels.flatten(1).long(), classes).float()  # [N,P,C]
    count = one_hot.sum(1).clamp(min=1)  # [N,C]
    mean = torch.einsum("ncp,npk->nck", x, one_hot) / count[:, None]
    total = (x * x).sum((1, 2))
    explained = (mean * mean * count[:, None]).sum((1, 2))
    return float((total - explained).sum())


def test_labels_align_with_image(world, batch):
    """Parts have flat-ish colours, so the true masks explain the image best: shifting the
    masks by one pixel either way, or transposing them, must leave more unexplained colour."""
    images, labels = batch
    images, labels = images[:100], labels[:100]
    classes = len(world.classes)
    true = _within_class_spread(images, labels, classes)
    wrong = {
        "right": labels.roll(1, dims=2), "left": labels.roll(-1, dims=2),
        "down": labels.roll(1, dims=1), "up": labels.roll(-1, dims=1),
        "transposed": labels.transpose(1, 2),
    }
    for name, shifted in wrong.items():
        spread = _within_class_spread(images, shifted, classes)
        assert spread > true * 1.08, f"labels {name} explain the image as well as the truth"


def test_labels_sit_on_their_parts(world):
    """At higher resolution: eyes are above the mouth, the face lies inside head + hair."""
    _, labels = world.render(range(40, 48), 128)
    rows = torch.arange(128).view(1, 128, 1).float()
    for lab in labels:
        eye, mouth = lab == 3, lab == 6
        if eye.any() and mouth.any():
            assert (rows[0] * eye).sum() / eye.sum() < (rows[0] * mouth).sum() / mouth.sum()


def test_windows_never_clip_a_part(world, monkeypatch):
    """Small parts are drawn in per-image windows for speed; drawing them over the whole
    canvas instead must not change a byte (else a part spilled out of its window)."""
    import numpy as np

    from datasetgan.worlds import faces

    seeds = list(range(500, 564))
    windowed = world.render(seeds, 64)
    narrow = faces._window

    def whole_canvas(fig, u_half, v_lo, v_hi, size, body=False):
        wide = np.full_like(u_half, faces._FAR)
        return narrow(fig, wide, -wide, wide, size, body)

    monkeypatch.setattr(faces, "_window", whole_canvas)
    everywhere = world.render(seeds, 64)
    assert torch.equal(windowed[0], everywhere[0]) and torch.equal(windowed[1], everywhere[1])


@pytest.mark.parametrize("resolution", [16, 48, 100, 512, 0, -64, 64.0, "64", True])
def test_bad_resolution_raises(world, resolution):
    with pytest.raises(DatasetGANError, match="power of two"):
        world.render([1], resolution)


@pytest.mark.parametrize("seeds", [[], [-1], [2**31], [1.5], ["3"], [True]])
def test_bad_seeds_raise(world, seeds):
    with pytest.raises(DatasetGANError):
        world.render(seeds, 64)


def test_largest_seed_and_array_seeds(world):
    import numpy as np

    images, _ = world.render([2**31 - 1, np.int64(3)], 32)
    assert images.shape[0] == 2
    assert torch.equal(world.render([3], 32)[0][0], images[1])
    assert torch.equal(world.render(torch.tensor([3]), 32)[0][0], images[1])
    assert torch.equal(world.render(np.array([3]), 32)[0][0], images[1])
