"""Scale-out generation: Ray workers and torchrun ranks write the bytes one process writes, and resume.

One trained tiny workspace, one single-process reference dataset and one local Ray cluster
(2 CPUs, a small object store) serve the whole module; every run uses 1 torch thread per
worker, as the reference (conftest), since identical bytes need the same thread count.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import torch

from datasetgan import engines
from datasetgan.engines import GenerateJob
from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import sample_name
from datasetgan.formats.masks import save_mask
from datasetgan.pipeline import Pipeline
from datasetgan.progress import progress_bar
from datasetgan.workspace import Workspace
from datasetgan.worlds import parse_classes

from conftest import TINY_INTERPRETER, brightness_mask, make_tiny_generator

N, BATCH = 64, 2  # 32 batches: enough for a kill to land in the middle


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """The conftest's annotated workspace, trained, once for the module."""
    root = tmp_path_factory.mktemp("engines")
    workspace = Workspace.init(root / "ws", str(make_tiny_generator(root / "tiny.safetensors")),
                               parse_classes("background,bright,dark"), interpreter=TINY_INTERPRETER)
    pipeline = Pipeline(workspace, "cpu")
    for cid in pipeline.sample(range(4)):
        save_mask(workspace.annotation_path(cid), brightness_mask(workspace.candidate_image(cid)),
                  [c.color for c in workspace.label_classes])
    pipeline.train(progress=False)
    return workspace


@pytest.fixture(scope="module")
def reference(workspace) -> dict[str, bytes]:
    """Every file of a single-process run (this process: 1 thread)."""
    assert torch.get_num_threads() == 1
    return files(Pipeline(workspace, "cpu").generate("reference", N, batch_size=BATCH, progress=False))


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for the module; the engine joins it rather than starting its own."""
    ray.init(address="local", num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


def files(folder: Path) -> dict[str, bytes]:
    """Every file of a dataset: images/, masks/, uncertainty/, latents/, parts/, manifest, settings, classes."""
    found = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert {"manifest.jsonl", "dataset.json", "classes.json"} <= set(found)
    assert {name.split("/")[0] for name in found} >= {"images", "masks", "uncertainty", "latents", "parts"}
    return found


def job(workspace: Workspace, name: str, **changes) -> GenerateJob:
    return GenerateJob(str(workspace.root), name, N, batch_size=BATCH, device="cpu", **changes)


def test_ray_workers_write_the_bytes_of_one_process(workspace, reference, cluster):
    folder = engines.generate(job(workspace, "ray"), "ray", workers=2, progress=False)
    assert files(folder) == reference


def test_a_failed_batch_is_named_and_a_rerun_completes_it(workspace, reference, cluster):
    blocked = workspace.datasets_dir / "failed" / "images" / f"{sample_name(100_000_021)}.png"
    blocked.mkdir(parents=True)  # the image cannot be written: its batch (first seed 100000020) fails
    with pytest.raises(DatasetGANError, match=r"^batch 0100000020 \(seeds 100000020-100000021\) failed: "
                                              r"IsADirectoryError.*run the same command again") as failure:
        engines.generate(job(workspace, "failed"), "ray", workers=2, progress=False)
    assert len(str(failure.value).splitlines()) == 1
    blocked.rmdir()
    folder = engines.generate(job(workspace, "failed"), "ray", workers=2, progress=False)
    assert files(folder) == reference


def test_a_killed_ray_run_resumes_to_the_same_bytes(workspace, reference, cluster):
    command = [sys.executable, "-m", "datasetgan", "generate", str(workspace.root), "-n", str(N), "--batch-size",
               str(BATCH), "--name", "killed", "--engine", "ray", "--workers", "2", "--device", "cpu"]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = workspace.datasets_dir / "killed" / "parts"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not list(parts.glob("*.jsonl")) and driver.poll() is None:
        time.sleep(0.05)
    assert driver.poll() is None, f"the Ray run ended before it was killed: {driver.stderr.read().decode()}"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local cluster (Ray's processes share its fate)
    driver.wait()
    assert not (workspace.datasets_dir / "killed" / "manifest.jsonl").exists(), "killed too late to test a resume"
    folder = engines.generate(job(workspace, "killed"), "ray", workers=2, progress=False)
    assert files(folder) == reference
    assert not list(folder.rglob("*.tmp"))


def test_two_torchrun_ranks_write_the_bytes_of_one_process(workspace, reference):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m",
               "datasetgan", "generate", str(workspace.root), "-n", str(N), "--batch-size", str(BATCH),
               "--name", "torchrun", "--device", "cpu", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "64 samples" in result.stdout and "rank 0 writes the manifest" in result.stdout  # one rank finalised
    assert files(workspace.datasets_dir / "torchrun") == reference


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--engine", "foo"], "unknown engine 'foo': choose local, ray or torchrun"),
    (["--engine", "ray", "--address", "127.0.0.1:{port}"], "cannot reach the Ray cluster at 127.0.0.1:"),
])
def test_bad_engine_options_are_one_line(tmp_path, args, message):
    args = [a.replace("{port}", str(free_port())) for a in args]
    result = subprocess.run([sys.executable, "-m", "datasetgan", "generate", str(tmp_path), "-n", "4", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_without_ray_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where it is not installed
    with pytest.raises(DatasetGANError, match=r"pip install 'datasetgan\[ray\]'"):
        engines.generate(GenerateJob(str(tmp_path), "x", 4), "ray")


def test_options_of_one_engine_are_refused_by_the_others(tmp_path):
    with pytest.raises(DatasetGANError, match="--shard is for the local engine"):
        engines.generate(GenerateJob(str(tmp_path), "x", 4), "ray", shard=(0, 2))
    with pytest.raises(DatasetGANError, match="--address and --workers are for --engine ray"):
        engines.generate(GenerateJob(str(tmp_path), "x", 4), "local", workers=2)


def test_the_engine_defaults_to_torchrun_under_torchrun():
    assert engines.choose_engine(None, {}) == "local"
    assert engines.choose_engine(None, {"RANK": "1", "WORLD_SIZE": "2"}) == "torchrun"
    assert engines.torchrun_rank({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    with pytest.raises(DatasetGANError, match="RANK and WORLD_SIZE"):
        engines.torchrun_rank({})
    assert engines.rank_device("cpu", 1) == torch.device("cpu")


def test_ray_workers_fit_the_cluster():
    plain = GenerateJob("ws", "x", 4)
    count, worker_job, reservation = engines.ray_workers({"CPU": 2.0}, plain, None)
    assert (count, worker_job.threads, worker_job.device, reservation) == (2, 1, "cpu", {"num_cpus": 1, "num_gpus": 0})
    count, worker_job, reservation = engines.ray_workers({"CPU": 16.0, "GPU": 2.0}, plain, None)
    assert (count, worker_job.device, reservation["num_gpus"]) == (2, "cuda", 1)  # a GPU each
    assert engines.ray_workers({"CPU": 16.0, "GPU": 2.0}, GenerateJob("ws", "x", 4, device="cpu"), None)[0] == 16
    with pytest.raises(DatasetGANError, match="room for 1 to 1 worker"):
        engines.ray_workers({"CPU": 2.0}, GenerateJob("ws", "x", 4, threads=2), 2)  # would wait forever for a CPU
    with pytest.raises(DatasetGANError, match="no GPU"):
        engines.ray_workers({"CPU": 2.0}, GenerateJob("ws", "x", 4, device="cuda"), None)


def test_rank_zero_stops_waiting_when_no_batch_appears():
    class Stuck:
        job = GenerateJob("ws", "x", 4, batch_size=2)

        def pending(self):
            return [range(100_000_002, 100_000_004)]

    with progress_bar(total=4, show=False) as bar, pytest.raises(DatasetGANError, match="0100000002"):
        engines.wait_for_batches(Stuck(), bar, stall_s=0.05, poll_s=0.01)
