import pytest
import torch

from datasetgan.features import (
    feature_channels,
    feature_dim,
    gather,
    merge_levels,
    resize,
    rows,
)

from references import hypercolumns

# (channels, resolution) of a small StyleGAN-like pyramid: two maps per block after the first.
LEVELS = [(8, 4), (8, 8), (6, 8), (5, 16), (4, 16), (3, 32)]


def random_pyramid(n: int = 2, levels=LEVELS, seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, r, r, generator=generator).to(dtype) for c, r in levels]


def random_pixels(n: int, height: int, width: int, count: int = 300, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, n, (count,), generator=generator)
    ys = torch.randint(0, height, (count,), generator=generator)
    xs = torch.randint(0, width, (count,), generator=generator)
    return images, ys, xs


# 32: some levels at the output resolution; 24, 37: not multiples of any level;
# 13: smaller than the largest levels (they are downsampled); 1: a single pixel.
@pytest.mark.parametrize("size", [32, 24, 37, 13, 1])
def test_gather_equals_hypercolumns(size):
    pyramid = random_pyramid()
    images, ys, xs = random_pixels(2, size, size)
    expected = hypercolumns(pyramid, size)[images, :, ys, xs]
    got = gather(pyramid, ys, xs, size, images)
    assert got.shape == (len(ys), feature_dim(pyramid))
    assert (got - expected).abs().max() < 1e-5


def test_gather_covers_borders_and_rectangular_grids():
    pyramid = random_pyramid(n=1)
    size = (20, 45)
    ys, xs = torch.meshgrid(torch.arange(20), torch.arange(45), indexing="ij")
    expected = hypercolumns(pyramid, size)[0].flatten(1).T
    got = gather(pyramid, ys.flatten(), xs.flatten(), size)
    assert (got - expected).abs().max() < 1e-5


def test_gather_upcasts_half_precision():
    pyramid = random_pyramid(dtype=torch.float16)
    images, ys, xs = random_pixels(2, 32, 32)
    got = gather(pyramid, ys, xs, 32, images)
    assert got.dtype == torch.float32
    expected = hypercolumns(pyramid, 32)[images, :, ys, xs]
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gather_reads_channels_last_levels(dtype):
    # The layout training stores, read without a copy; any other is copied, same result.
    pyramid = random_pyramid(dtype=dtype)
    stored = [level.contiguous(memory_format=torch.channels_last) for level in pyramid]
    assert all(rows(level).data_ptr() == level.data_ptr() for level in stored)
    images, ys, xs = random_pixels(2, 24, 24)
    expected = hypercolumns(pyramid, 24)[images, :, ys, xs]
    assert (gather(stored, ys, xs, 24, images) - expected).abs().max() < 1e-5
    assert torch.equal(gather(stored, ys, xs, 24, images), gather(pyramid, ys, xs, 24, images))


def test_gather_needs_images_for_a_batch():
    with pytest.raises(ValueError):
        gather(random_pyramid(n=2), torch.tensor([0]), torch.tensor([0]), 8)


def test_resize_same_size_is_identity():
    level = torch.randn(1, 3, 8, 8)
    assert torch.equal(resize(level, 8), level)
    assert torch.equal(resize(level, 8), torch.nn.functional.interpolate(level, size=8, mode="bilinear"))


def test_merge_levels_keeps_the_hypercolumn():
    pyramid = random_pyramid()
    merged = merge_levels(pyramid)
    assert [level.shape[-1] for level in merged] == [4, 8, 16, 32]
    assert feature_channels(merged) == [8, 14, 9, 3]
    assert (hypercolumns(merged, 32) - hypercolumns(pyramid, 32)).abs().max() < 1e-6


def test_feature_dim():
    pyramid = random_pyramid()
    assert feature_channels(pyramid) == [c for c, _ in LEVELS]
    assert feature_dim(pyramid) == 34
    assert hypercolumns(pyramid, 10).shape == (2, 34, 10, 10)
