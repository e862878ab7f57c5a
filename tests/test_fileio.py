import os
import subprocess
import sys

from safetensors import safe_open

from datasetgan.fileio import remove_orphaned_temporaries

SAVE = """
import sys, torch
from datasetgan.fileio import save_tensors
save_tensors(sys.argv[1], {"w": torch.arange(6.0).view(2, 3), "seeds": torch.tensor([3, 1])},
             {"format": "x", "config": '{"a": 1}', "step": "7", "psi": "0.7", "generator": "builtin:faces64"})
"""


def test_same_tensors_and_metadata_give_the_same_bytes_in_every_process(tmp_path):
    # safetensors orders metadata by a per-process hash seed; save_tensors must not
    paths = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for path in paths:
        subprocess.run([sys.executable, "-c", SAVE, str(path)], check=True)
    assert len({path.read_bytes() for path in paths}) == 1
    with safe_open(str(paths[0]), "pt") as handle:
        assert handle.metadata()["step"] == "7"
        assert handle.get_tensor("w").tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert not list(tmp_path.glob(".*.tmp"))


def test_orphaned_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "images").mkdir()
    orphan = tmp_path / "images" / f".0005.png.{int(dead.stdout)}.0a1b2c3d.tmp"
    live = tmp_path / "images" / f".0006.png.{os.getpid()}.0a1b2c3d.tmp"
    kept = tmp_path / "images" / "0007.png"
    for path in (orphan, live, kept):
        path.write_bytes(b"png")
    assert remove_orphaned_temporaries(tmp_path) == 1
    assert not orphan.exists() and live.exists() and kept.exists()
