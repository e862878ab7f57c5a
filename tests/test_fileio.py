import subprocess
import sys

from safetensors import safe_open

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
