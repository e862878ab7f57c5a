"""Samples per second of `generate` on one process, Ray workers and torchrun ranks, on this machine.

    python bench/scale_out.py                       # 128 samples, batch 8, a tiny interpreter
    python bench/scale_out.py --n 64 --interpreter default

A workspace on `builtin:faces64` holding the shipped annotations (the demo's) and a trained
interpreter (tiny: 3 members, 2 epochs, quick to set up; default: the paper's 10) is made in a
temporary folder. Each row is then one `datasetgan generate` command in its own process, as a
user runs it, into its own dataset of the same seeds. The wall time includes starting Python,
loading the models and, for Ray, starting a local cluster and its workers; the steady rate
counts only the samples after the first batch record, over the time to the last (from the
record files' times), so the fixed costs and the rate separate. Every row is checked
byte-identical to the one-process, 1-thread run (rows with 2 threads need not be).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from datasetgan.demo import shipped_annotations
from datasetgan.pipeline import Pipeline
from datasetgan.worlds import get_world

TINY_INTERPRETER = {"members": 3, "min_epochs": 1, "max_epochs": 2}


def make_workspace(root: Path, interpreter: str) -> Path:
    settings = TINY_INTERPRETER if interpreter == "tiny" else {}
    pipeline = Pipeline.from_annotations(root / "ws", "builtin:faces64", get_world("faces").classes,
                                         sorted(shipped_annotations().glob("*.png")), "cpu", interpreter=settings)
    pipeline.train(progress=False)
    return pipeline.workspace.root


def rows(n: int, batch: int) -> list[tuple[str, list[str]]]:
    """(label, command) per configuration; each writes dataset NAME under the workspace."""
    cli, common = [sys.executable, "-m", "datasetgan"], ["-n", str(n), "--batch-size", str(batch), "--device", "cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m",
                "datasetgan"]
    return [
        ("1 process, 1 thread", [*cli, "generate", "{ws}", "--name", "local1", "--threads", "1", *common]),
        ("1 process, 2 threads", [*cli, "generate", "{ws}", "--name", "local2", "--threads", "2", *common]),
        ("Ray, 1 worker x 1 thread", [*cli, "generate", "{ws}", "--name", "ray1", "--engine", "ray", "--workers", "1",
                                      *common]),
        ("Ray, 2 workers x 1 thread", [*cli, "generate", "{ws}", "--name", "ray2", "--engine", "ray", "--workers", "2",
                                       *common]),
        ("torchrun, 2 ranks x 1 thread", [*torchrun, "generate", "{ws}", "--name", "torchrun2", "--threads", "1",
                                          *common]),
    ]


def steady_rate(folder: Path, batch: int) -> float:
    """Samples per second between the first and the last batch record."""
    times = sorted(p.stat().st_mtime for p in (folder / "parts").glob("*.jsonl"))
    if len(times) < 2 or times[-1] == times[0]:
        return float("nan")
    return (len(times) - 1) * batch / (times[-1] - times[0])


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--interpreter", choices=["tiny", "default"], default="tiny")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"python bench/scale_out.py --n {args.n} --batch-size {args.batch_size} --interpreter {args.interpreter}")
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}; load average at start {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        workspace = make_workspace(Path(tmp), args.interpreter)
        results, reference = [], None
        for label, command in rows(args.n, args.batch_size):
            start = time.perf_counter()
            done = subprocess.run([c.replace("{ws}", str(workspace)) for c in command], capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
            folder = workspace / "datasets" / command[command.index("--name") + 1]
            data = files(folder)
            reference = reference or data
            results.append((label, wall, steady_rate(folder, args.batch_size), data == reference))
    base_wall, base_rate = results[0][1], results[0][2]
    print(f"load average at the end {os.getloadavg()}\n")
    print("| engine | wall s | samples/s (wall) | samples/s (steady) | steady vs 1 process "
          "| same bytes as 1 process, 1 thread |")
    print("|---|---|---|---|---|---|")
    for label, wall, rate, same in results:
        print(f"| {label} | {wall:.1f} | {args.n / wall:.1f} | {rate:.1f} | {rate / base_rate:.2f}x | "
              f"{'yes' if same else 'no'} |")
    print(f"\nRay's fixed cost (1 worker against 1 process, wall): {results[2][1] - base_wall:+.1f} s")


if __name__ == "__main__":
    main()
