"""The official DatasetGAN release as input: its StyleGAN1 files, and its annotated latents
(`latent_stylegan1.npy`, `image_{i}.jpg`, `image_mask{i}.npy`) as a workspace that trains and
generates. The layout is built here at tiny size, from a random StyleGAN1."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_INTERPRETER
from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import read_manifest
from datasetgan.formats.masks import load_mask
from datasetgan.generators.loaders import convert, load_network_file
from datasetgan.generators.registry import describe
from datasetgan.generators.stylegan1 import StyleGAN1Generator
from datasetgan.generators.stylegan1_generator import StyleGAN1
from datasetgan.labels import IGNORE, parse_class_names
from datasetgan.release import import_release
from datasetgan.workspace import Workspace
from test_cli import run

N = 3


def tiny_stylegan1(seed: int = 0) -> StyleGAN1Generator:
    """16 px, every tensor perturbed (the constant input, biases and noise strengths matter)."""
    torch.manual_seed(seed)
    network = StyleGAN1Generator(resolution=16, fmap_base=64, fmap_max=16)
    with torch.no_grad():
        for tensor in network.state_dict().values():
            tensor.add_(0.2 * torch.randn_like(tensor))
    return network.eval()


def release_files(folder, network: StyleGAN1Generator) -> dict:
    """The release's generator files: the g_all state dict and the separate average latent."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in network.state_dict().items() if k != "avg_latent"}
    torch.save(state, folder / "tiny.for_g_all.pt")
    np.save(folder / "avg_latent_stylegan1.npy", network.avg_latent.numpy())
    return {"pt": folder / "tiny.for_g_all.pt", "avg": folder / "avg_latent_stylegan1.npy"}


def release_layout(folder, network: StyleGAN1Generator, mask_shape=(8, 8), shift: int = 0) -> dict:
    """latent_stylegan1.npy (z), and image_{i}.jpg + image_mask{i}.npy of latent i + shift (0: the
    release's pairing). Mask i marks latent i's bright pixels 1 and dark ones 2 (index mask)."""
    folder.mkdir(parents=True, exist_ok=True)
    zs = np.random.RandomState(7).randn(N, 512).astype(np.float32)
    np.save(folder / "latent_stylegan1.npy", zs)
    generator = StyleGAN1(network, device="cpu")
    ws = generator.ws_from_zs(torch.from_numpy(zs), 0.7, 8)
    images = [generator.to_uint8(generator.synthesize(ws[i : i + 1], [i])[0])[0].permute(1, 2, 0).numpy()
              for i in range(N)]
    for i in range(N):
        image = images[(i + shift) % N]
        Image.fromarray(image).save(folder / f"image_{i}.jpg", quality=100, subsampling=0)
        grey = np.asarray(Image.fromarray(image).convert("L").resize(mask_shape[::-1], Image.NEAREST), np.float32)
        np.save(folder / f"image_mask{i}.npy", np.where(grey > grey.mean() + 10, 1, np.where(grey < grey.mean() - 10, 2, 0)))
    return {"latents": folder / "latent_stylegan1.npy", "ws": ws, "images": images}


# --- the release's generator files ----------------------------------------------------------------


def test_release_generator_loads_with_its_average_latent(tmp_path):
    network = tiny_stylegan1()
    files = release_files(tmp_path / "release", network)
    loaded = load_network_file(files["pt"])  # the average latent found beside it
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in network.state_dict().items())
    converted = convert(files["pt"], tmp_path / "sg1.safetensors", files["avg"])
    again = load_network_file(tmp_path / "sg1.safetensors")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in converted.state_dict().items())
    info = describe(again)
    assert info["architecture"].startswith("StyleGAN1") and info["num_ws"] == 18 and info["c_dim"] == 0
    assert [layer["name"] for layer in info["feature_layers"]][:3] == ["b4.epi2", "b4.conv", "b8.epi2"]

    (files["avg"]).rename(tmp_path / "elsewhere.npy")
    with pytest.raises(DatasetGANError, match="needs its average latent.*--avg-latent") as missing:
        load_network_file(files["pt"])
    np.save(tmp_path / "bad.npy", np.zeros((3, 512), np.float32))
    with pytest.raises(DatasetGANError, match=r"avg latent has shape \[3, 512\], expected \[18, 512\]") as bad:
        load_network_file(files["pt"], tmp_path / "bad.npy")
    with pytest.raises(DatasetGANError, match="not the DatasetGAN release's StyleGAN1: drop --avg-latent"):
        load_network_file(tmp_path / "sg1.safetensors", tmp_path / "elsewhere.npy")
    assert all("\n" not in str(e.value) for e in (missing, bad))


# --- the release's annotated latents --------------------------------------------------------------


def test_import_pairs_mask_i_with_latent_i(tmp_path):
    network = tiny_stylegan1()
    files = release_files(tmp_path / "release", network)
    layout = release_layout(tmp_path / "release" / "face", network)
    _, report = import_release(tmp_path / "ws", str(files["pt"]), tmp_path / "release" / "face", layout["latents"],
                               device="cpu")
    workspace = Workspace.open(tmp_path / "ws")
    assert report.ids == workspace.candidate_ids() == ["000000", "000001", "000002"]
    assert workspace.config.sampling.noise == "per_sample" and workspace.config.sampling.truncation_cutoff == 8
    assert torch.equal(workspace.ws_for(report.ids), layout["ws"])
    for i, cid in enumerate(report.ids):
        mask = load_mask(workspace.annotation_path(cid))
        expected = np.load(tmp_path / "release" / "face" / f"image_mask{i}.npy")
        assert mask.shape == (16, 16)
        assert np.array_equal(mask[::2, ::2], expected)  # nearest x2: mask i, of latent i, on its candidate
        ours = np.asarray(Image.open(workspace.candidate_image(cid)))
        assert np.array_equal(ours, layout["images"][i])  # noise fixed by the candidate id
    assert report.render_difference < 4  # only the jpg's loss: the pairs match


def test_a_layout_off_by_one_shows_in_the_render_difference(tmp_path):
    """The release's make_training_data.py numbers its renders from the mean latent: an image i that
    belongs to latent i + 1 stands out against our render of latent i."""
    network = tiny_stylegan1()
    files = release_files(tmp_path / "release", network)
    layout = release_layout(tmp_path / "release" / "shifted", network, shift=1)
    _, report = import_release(tmp_path / "ws", str(files["pt"]), tmp_path / "release" / "shifted",
                               layout["latents"], device="cpu")
    assert report.render_difference > 10


def test_wide_masks_are_centred_with_ignore_bars(tmp_path):
    """Cars: 512 x 384 masks of a 512 px generator; the bars above and below become ignore."""
    network = tiny_stylegan1()
    files = release_files(tmp_path / "release", network)
    layout = release_layout(tmp_path / "release" / "car", network, mask_shape=(12, 16))
    _, report = import_release(tmp_path / "ws", str(files["pt"]), tmp_path / "release" / "car", layout["latents"],
                               device="cpu")
    mask = load_mask(Workspace.open(tmp_path / "ws").annotation_path("000000"))
    assert (mask[:2] == IGNORE).all() and (mask[-2:] == IGNORE).all()
    assert np.array_equal(mask[2:14], np.load(tmp_path / "release" / "car" / "image_mask0.npy"))


def test_bad_release_input_is_refused_before_anything_is_written(tmp_path):
    network = tiny_stylegan1()
    files = release_files(tmp_path / "release", network)
    folder = tmp_path / "release" / "face"
    layout = release_layout(folder, network)
    with pytest.raises(DatasetGANError, match=r"shape \[3, 512\], expected w\+.*drop it for z"):
        import_release(tmp_path / "ws", str(files["pt"]), folder, layout["latents"], from_w=True, device="cpu")
    (folder / "image_mask2.npy").unlink()
    with pytest.raises(DatasetGANError, match="image_mask2.npy.*mask i with latent i"):
        import_release(tmp_path / "ws", str(files["pt"]), folder, layout["latents"], device="cpu")
    np.save(folder / "image_mask2.npy", np.full((8, 8), 7))
    with pytest.raises(DatasetGANError, match=r"class ids \[7\].*--classes"):
        import_release(tmp_path / "ws", str(files["pt"]), folder, layout["latents"],
                       classes=parse_class_names("background,bright,dark"), device="cpu")
    assert not (tmp_path / "ws").exists()


def test_release_workflow_imports_trains_and_generates_from_the_cli(tmp_path):
    network = tiny_stylegan1()
    files = release_files(tmp_path / "release", network)
    layout = release_layout(tmp_path / "release" / "face", network)
    root = tmp_path / "ws"
    made = run("import-release", str(root), "--annotations", str(tmp_path / "release" / "face"),
               "--latents", str(layout["latents"]), "--generator", str(files["pt"]), "--avg-latent", str(files["avg"]),
               "--classes", "background,bright,dark", "--device", "cpu")
    assert made.returncode == 0, made.stderr
    assert "imported 3 annotated latents" in made.stdout
    assert run("sample", str(root), "--seeds", "10,11", "--device", "cpu").returncode == 0  # more to paint
    workspace = Workspace.open(root)
    assert workspace.candidate_ids() == ["000000", "000001", "000002", "000010", "000011"]
    assert workspace.config.generator == str(root.resolve() / "generator.safetensors")
    workspace.config.interpreter = TINY_INTERPRETER
    workspace.save_config()
    assert run("train", str(root), "--device", "cpu").returncode == 0
    generated = run("generate", str(root), "-n", "4", "--batch-size", "2", "--device", "cpu")
    assert generated.returncode == 0, generated.stderr
    assert len(read_manifest(root / "datasets" / "synthetic", kept_only=False)) == 4
    again = run("import-release", str(root), "--annotations", str(tmp_path / "release" / "face"),
                "--latents", str(layout["latents"]), "--generator", str(files["pt"]), "--avg-latent", str(files["avg"]))
    assert again.returncode != 0 and "already a workspace" in again.stderr
