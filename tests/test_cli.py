"""The CLI as a user meets it: real subprocesses, one-line errors, non-zero exits."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasetgan.worlds import get_world


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datasetgan", *args], capture_output=True, text=True, timeout=120)


def test_world_render_writes_images_masks_and_classes(tmp_path):
    result = run("world", "render", "--n", "3", "--out", str(tmp_path), "--resolution", "32")
    assert result.returncode == 0, result.stderr
    world = get_world("faces")
    classes = json.loads((tmp_path / "classes.json").read_text())["classes"]
    assert [c["name"] for c in classes] == [c.name for c in world.classes]
    seeds = list(world.seed_ranges["real_test"][:3])
    images, labels = world.render(seeds, 32)
    for i, seed in enumerate(seeds):
        mask = Image.open(tmp_path / "masks" / f"{seed:010d}.png")
        assert mask.mode == "P"  # palette PNG: colours for people, class ids for programs
        assert np.array_equal(np.asarray(mask), labels[i].numpy())
        image = np.asarray(Image.open(tmp_path / "images" / f"{seed:010d}.png"))
        assert np.array_equal(image, images[i].permute(1, 2, 0).numpy())


@pytest.mark.parametrize("args, message", [
    (["world", "render", "--n", "0", "--out", "{tmp}"], "--n must be at least 1"),
    (["world", "render", "--world", "cars", "--out", "{tmp}"], "unknown world 'cars'"),
    (["world", "render", "--resolution", "48", "--out", "{tmp}"], "48"),
    (["world", "render", "--out", "/proc/version/out"], "cannot write to output folder"),
    (["generator", "sample", "builtin:nope"], "unknown built-in generator 'nope'"),
    (["sample", "{tmp}"], "not a workspace"),
    (["bench", "--tables", "2", "--out", "{tmp}"], "unknown table(s) 2: choose from 1, 3, 4, 6, gap, sampling"),
    (["bench", "--seeds", "0,x", "--out", "{tmp}"], "comma-separated numbers"),
    (["gan", "train", "--world", "faces", "--style-mixing", "1.5", "--run", "{tmp}"], "style_mixing"),
    (["gan", "train", "--world", "faces", "--patience", "-1", "--run", "{tmp}"], "patience"),
])
def test_bad_input_is_one_line_and_non_zero(tmp_path, args, message):
    result = run(*[a.replace("{tmp}", str(tmp_path / "x")) for a in args])
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_every_command_has_help():
    from typer.testing import CliRunner

    from datasetgan.cli import app

    runner = CliRunner()
    for command in (["world", "render"], ["world", "oracle", "train"], ["gan", "train"], ["init"], ["sample"],
                    ["train"], ["generate"], ["annotate"], ["select"], ["import"], ["export"], ["merge"],
                    ["generator", "info"], ["generator", "convert"], ["generator", "sample"], ["segment", "train"],
                    ["segment", "eval"], ["bench"], ["demo"], ["discover"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, command


def test_init_takes_the_sampling_options_and_refuses_bad_ones(tmp_path):
    import yaml

    result = run("init", str(tmp_path / "ws"), "--classes", "a,b", "--truncation-cutoff", "8", "--noise", "per_sample")
    assert result.returncode == 0, result.stderr
    sampling = yaml.safe_load((tmp_path / "ws" / "datasetgan.yaml").read_text())["sampling"]
    assert sampling == {"psi": 0.7, "truncation_cutoff": 8, "noise": "per_sample"}
    for option, value in (("--noise", "random"), ("--truncation-cutoff", "0")):
        result = run("init", str(tmp_path / "bad"), "--classes", "a,b", option, value)
        assert result.returncode == 1 and "invalid sampling option" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_generator_sample_writes_the_seeds_grid(tmp_path, tiny_generator):
    out = tmp_path / "grid.png"
    result = run("generator", "sample", str(tiny_generator), "--seeds", "3,5-7", "--columns", "2", "--out", str(out),
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "wrote 4 samples" in result.stdout
    from datasetgan.generators.registry import load_generator

    generator = load_generator(str(tiny_generator), "cpu")
    first = generator.to_uint8(generator.synthesize(generator.ws_from_seeds([3], 1.0))[0])[0].permute(1, 2, 0)
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 2 * (32 + 2), 2 + 2 * (32 + 2), 3)  # 2 x 2 tiles of 32 px, 2 px apart
    assert np.array_equal(grid[2:34, 2:34], first.numpy())  # seed 3 is the top-left tile
