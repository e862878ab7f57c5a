"""The feature magic wand: exactly the connected pixels at or above the threshold, and its route."""

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from conftest import make_workspace
from datasetgan.annotate.server import create_app
from datasetgan.annotate.wand import PyramidSimilarity, wand_region
from datasetgan.errors import DatasetGANError
from datasetgan.pipeline import Pipeline
from references import hypercolumns

THRESHOLD = 0.9
BACKGROUND, PART = (1.0, 0.0), (0.0, 1.0)


def unit(similarity: float) -> tuple[float, float]:
    """A 2-d vector whose cosine similarity to PART is `similarity`."""
    return (float(np.sqrt(1 - similarity**2)), similarity)


def feature_map(pixels: dict[tuple[int, int], tuple[float, float]], shape: tuple[int, int] = (6, 9)) -> torch.Tensor:
    """[2, H, W] features: BACKGROUND everywhere but at the given (y, x) pixels."""
    features = torch.tensor(BACKGROUND)[:, None, None].repeat(1, *shape)
    for (y, x), vector in pixels.items():
        features[:, y, x] = torch.tensor(vector)
    return features


def expected_mask(pixels, shape: tuple[int, int] = (6, 9)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for y, x in pixels:
        mask[y, x] = True
    return mask


def test_selects_the_connected_similar_pixels_and_not_a_similar_disconnected_blob():
    blob = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 2)]
    other = [(1, 6), (2, 6), (2, 7)]  # as similar, but background lies between
    # lengths differ (cosine ignores them), and a pixel at 0.95 is similar enough
    features = feature_map({**{p: PART for p in blob}, (3, 2): (0.0, 5.0), (2, 2): unit(0.95),
                            **{p: PART for p in other}})
    assert np.array_equal(wand_region(features, 1, 1, THRESHOLD), expected_mask(blob))
    assert np.array_equal(wand_region(features, 2, 7, THRESHOLD), expected_mask(other))


def test_a_pixel_just_below_the_threshold_breaks_the_connection():
    left, bridge, right = [(2, 1), (2, 2)], (2, 3), [(2, 4), (2, 5)]
    pixels = {p: PART for p in left + right}
    below = wand_region(feature_map({**pixels, bridge: unit(THRESHOLD - 1e-3)}), 2, 1, THRESHOLD)
    assert np.array_equal(below, expected_mask(left))
    above = wand_region(feature_map({**pixels, bridge: unit(THRESHOLD + 1e-3)}), 2, 1, THRESHOLD)
    assert np.array_equal(above, expected_mask(left + [bridge] + right))


def test_diagonal_neighbours_are_not_connected():
    features = feature_map({(1, 1): PART, (2, 2): PART})
    assert np.array_equal(wand_region(features, 1, 1, THRESHOLD), expected_mask([(1, 1)]))


def test_the_clicked_pixel_is_always_selected():
    zero = feature_map({(3, 3): (0.0, 0.0), (3, 4): PART})  # a zero vector resembles nothing, itself included
    assert np.array_equal(wand_region(zero, 3, 3, THRESHOLD), expected_mask([(3, 3)]))
    odd = torch.randn(7, 5, 5, generator=torch.Generator().manual_seed(0))
    assert all(wand_region(odd, y, x, 1.0)[y, x] for y in range(5) for x in range(5))  # even if 1 rounds lower


def test_a_threshold_of_minus_one_selects_everything():
    assert wand_region(feature_map({(2, 2): PART, (4, 4): (-1.0, 0.0)}), 2, 2, -1.0).all()


@pytest.mark.parametrize(("y", "x", "threshold", "says"), [
    (6, 0, 0.5, "outside the 9x6 image"), (0, -1, 0.5, "outside the 9x6 image"),
    (0, 9, 0.5, "0 <= x < 9"), (0, 0, 1.5, "give a number in [-1, 1]"), (0, 0, float("nan"), "[-1, 1]"),
])
def test_bad_clicks_are_one_line_errors(y, x, threshold, says):
    with pytest.raises(DatasetGANError, match=r"^[^\n]*$") as error:
        wand_region(feature_map({}), y, x, threshold)
    assert says in str(error.value)


# ---- a generator's pyramid --------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("wand"), "background,skin,hair", 2, {}, 32)


def candidate_pyramid(workspace, cid: str) -> list[torch.Tensor]:
    pipeline = Pipeline(workspace, "cpu")
    return pipeline.generator.synthesize(workspace.ws_for([cid]), workspace.config.sampling.noise_ids([cid]))[1]


def test_pyramid_similarity_equals_the_cosine_of_materialised_hypercolumns(workspace):
    pyramid = candidate_pyramid(workspace, "000001")
    features = hypercolumns(pyramid, 32)[0]
    similarity = PyramidSimilarity(pyramid, (32, 32))
    for y, x in ((0, 0), (13, 21), (31, 5)):
        naive = torch.nn.functional.cosine_similarity(features, features[:, y, x, None, None], dim=0)
        assert torch.allclose(similarity(y, x), naive, atol=1e-5)
        expected = wand_region(features, y, x, 0.8)
        assert np.array_equal(similarity.region(y, x, 0.8), expected) and 1 < expected.sum() < 32 * 32


def test_the_wand_route_returns_the_region_as_bytes_and_refuses_bad_clicks(workspace):
    with TestClient(create_app(workspace, device="cpu")) as client:
        response = client.post("/api/candidates/000001/wand", json={"x": 21, "y": 13, "threshold": 0.8})
        assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
        region = np.frombuffer(response.content, np.uint8).reshape(32, 32)
        expected = PyramidSimilarity(candidate_pyramid(workspace, "000001"), (32, 32)).region(13, 21, 0.8)
        assert np.array_equal(region, expected.astype(np.uint8))

        for body, status, says in [
            ({"x": 32, "y": 0, "threshold": 0.8}, 400, "outside the 32x32 image"),
            ({"x": 0, "y": -1, "threshold": 0.8}, 400, "outside the 32x32 image"),
            ({"x": 0, "y": 0, "threshold": 1.01}, 400, "give a number in [-1, 1]"),
        ]:
            refused = client.post("/api/candidates/000001/wand", json=body)
            assert refused.status_code == status and says in refused.json()["detail"]
        assert client.post("/api/candidates/000000/wand", json={"x": 0, "y": 0}).status_code == 422
        assert client.post("/api/candidates/999999/wand", json={"x": 0, "y": 0, "threshold": 0.5}).status_code == 404
