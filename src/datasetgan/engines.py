"""Where `generate` runs: one process (`local`), the workers of a Ray cluster (`ray`), or the ranks of
a `torchrun` launch (`torchrun`); the same batches, the same per-batch code, the same bytes.

Every engine cuts the seeds into the factory's fixed batches and makes each through
`factory.generate_batch`, in a worker that opened the workspace's pipeline once (generator and
labeller loaded on first use, kept for every later batch). A batch is written atomically and
recorded last, so any engine resumes any other's unfinished run, and the final drop pass
(`factory.finalize`) runs once, in one process, after every batch exists.

Same bytes need the same torch thread count: a CPU convolution's reductions are split by
thread, so a dataset made by 2-thread workers can differ in the last bit from a 1-thread one.
`GenerateJob.threads` fixes the count in every worker (default: 1 per Ray worker, torch's
default in a local or torchrun process); give the same `--threads` to compare runs.
"""

import logging
import os
import re
import socket
import time
from collections import deque
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Mapping

import torch

from datasetgan import factory
from datasetgan.device import resolve_device
from datasetgan.discovery import PartLabeller
from datasetgan.errors import DatasetGANError
from datasetgan.pipeline import Pipeline
from datasetgan.progress import progress_bar

ENGINES = ("local", "ray", "torchrun")
LOCAL_OBJECT_STORE = 100 * 2**20  # workers write their files and return counts: the store carries almost nothing
CONNECT_TIMEOUT_S = 5.0  # ray.init waits for an unreachable cluster for minutes: probe it first
STALL_TIMEOUT_S = 30 * 60  # torchrun rank 0 gives up when no batch appears for this long
POLL_S = 1.0


@dataclass(frozen=True)
class GenerateJob:
    """A `generate` command in plain values: what every worker needs to make the same batches (sent
    to Ray workers as is). `threads`: torch threads per worker (None: see the module docstring)."""

    root: str
    name: str
    n: int
    first_seed: int = factory.FIRST_SEED
    drop_uncertain: float = 0.1
    batch_size: int = 8
    conditions: tuple[int, ...] | None = None
    from_clusters: bool = False
    device: str = "auto"
    threads: int | None = None


class DatasetWorker:
    """One worker's share of a job: the workspace's pipeline and the factory's per-batch step.

    The models load on first use and stay: a Ray actor holds one worker for its lifetime (the
    per-worker cache of loaded models is the actor's state), a torchrun rank holds one. Loading
    lazily also makes a failure to load (no interpreter, not a workspace) an error of the call
    that needed it, which Ray hands back with its original exception.
    """

    def __init__(self, job: GenerateJob, device: str | torch.device | None = None):
        if job.threads is not None:  # a process setting: a worker owns its process
            torch.set_num_threads(job.threads)
        self.job, self.device = job, job.device if device is None else device

    @cached_property
    def pipeline(self) -> Pipeline:
        return Pipeline.open(self.job.root, self.device)

    @cached_property
    def labeller(self) -> factory.Labeller:
        return PartLabeller.open(self.pipeline.workspace) if self.job.from_clusters else self.pipeline.interpreter

    @cached_property
    def settings(self) -> factory.GenerationSettings:
        job = self.job
        return factory.dataset_settings(self.pipeline.workspace, self.pipeline.generator, self.labeller, job.n,
                                        job.first_seed, job.drop_uncertain, job.batch_size, job.conditions)

    @property
    def folder(self) -> Path:
        return self.pipeline.workspace.datasets_dir / self.job.name

    def prepare(self) -> list[range]:
        """Create the dataset folder (or check its settings); the batches still to make."""
        factory.prepare_dataset(self.folder, self.settings, self.pipeline.workspace)
        return self.pending()

    def pending(self) -> list[range]:
        return factory.pending_batches(self.folder, self.settings)

    def run(self, batch: range) -> int:
        """Make one batch; any failure becomes one line naming it. Returns its sample count."""
        try:
            factory.generate_batch(self.folder, self.settings, self.pipeline.workspace, self.pipeline.generator,
                                   self.labeller, batch)
        except Exception as exc:
            raise batch_failed(batch, describe(exc)) from exc
        return len(batch)

    def finish(self) -> Path:
        """The final drop pass and manifest, once every batch exists."""
        missing = factory.missing_batches(self.folder, self.settings)
        if missing:
            raise DatasetGANError(f"{len(missing)} batch(es) still missing (first seeds: {', '.join(missing[:5])}): "
                                  "run the same command again")
        factory.finalize(self.folder, self.settings)
        return self.folder


def describe(exc: BaseException) -> str:
    """An exception on one line: our own errors as they read, others with their type."""
    text = str(exc) if isinstance(exc, DatasetGANError) else f"{type(exc).__name__}: {exc}"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def batch_failed(batch: range, reason: str) -> DatasetGANError:
    seeds = f"seeds {batch.start}-{batch.stop - 1}"
    return DatasetGANError(f"batch {factory.batch_name(batch)} ({seeds}) failed: {reason}; "
                           "run the same command again to resume (finished batches are kept)")


def choose_engine(engine: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The engine asked for; by default torchrun when started by torchrun (RANK and WORLD_SIZE set)."""
    if engine is None:
        return "torchrun" if "RANK" in environ and "WORLD_SIZE" in environ else "local"
    if engine not in ENGINES:
        raise DatasetGANError(f"unknown engine {engine!r}: choose {', '.join(ENGINES[:-1])} or {ENGINES[-1]}")
    return engine


def generate(job: GenerateJob, engine: str | None = None, shard: tuple[int, int] = (0, 1),
             address: str | None = None, workers: int | None = None, progress: bool = True) -> Path:
    """Generate (or resume) `job` on `engine` (see `choose_engine`); returns the dataset folder, which
    holds the manifest once every batch exists."""
    engine = choose_engine(engine)
    if engine != "local" and shard != (0, 1):
        raise DatasetGANError(f"--shard is for the local engine: {engine} splits the batches itself")
    if engine != "ray" and (address is not None or workers is not None):
        raise DatasetGANError("--address and --workers are for --engine ray")
    if engine == "ray":
        return generate_ray(job, address, workers, progress)
    if engine == "torchrun":
        return generate_torchrun(job, os.environ, progress)
    return generate_local(job, shard, progress)


def generate_local(job: GenerateJob, shard: tuple[int, int], progress: bool) -> Path:
    worker = DatasetWorker(job)
    return worker.pipeline.generate(job.name, job.n, job.first_seed, job.drop_uncertain, shard, job.batch_size,
                                    progress, job.conditions, worker.labeller)


# ---- Ray -------------------------------------------------------------------------------------


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise DatasetGANError("--engine ray needs Ray: pip install 'datasetgan[ray]'") from None
    return ray


def probe(address: str) -> None:
    """Fail in seconds on a cluster that does not answer (host:port or ray://host:port)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise DatasetGANError(f"--address {address!r}: use host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise DatasetGANError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): start it with "
                              "`ray start --head` there, or fix --address") from None


def connect_ray(ray: ModuleType, address: str | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Join the cluster at `address` (else Ray's RAY_ADDRESS), or start a fresh local one with the CPUs
    Ray counts (its count heeds container limits) and a small object store ("local": never a stale
    cluster that `ray start` left behind).
    False when this process was already connected (a notebook, the tests): it stays so."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    address = address or environ.get("RAY_ADDRESS") or None
    if address is None:
        ray.init(address="local", object_store_memory=LOCAL_OBJECT_STORE, include_dashboard=False, **quiet)
        return True
    if address != "auto":
        probe(address)
    try:
        ray.init(address=address, **quiet)
    except ConnectionError as exc:
        raise DatasetGANError(f"cannot connect to the Ray cluster at {address}: {describe(exc)}") from None
    return True


def ray_workers(resources: Mapping[str, float], job: GenerateJob,
                requested: int | None) -> tuple[int, GenerateJob, dict]:
    """How many workers the cluster has room for now, the job as each runs it, and each one's
    reservation: a GPU each where the cluster has GPUs (unless --device cpu), `threads` CPUs each.
    Never more workers than fit, so that none waits forever for a place (the deadlock of a small machine)."""
    threads = job.threads or 1
    cpus = int(resources.get("CPU", 0))
    gpus = 0 if job.device == "cpu" else int(resources.get("GPU", 0))
    if job.device.startswith("cuda") and not gpus:
        raise DatasetGANError(f"--device {job.device}: the Ray cluster has no GPU (use --device auto or cpu)")
    room = min(gpus, cpus // threads) if gpus else cpus // threads
    if room < 1:
        raise DatasetGANError(f"the Ray cluster has {cpus} CPU(s): too few for one worker of --threads {threads}")
    if requested is not None and not 1 <= requested <= room:
        raise DatasetGANError(f"--workers {requested}: the Ray cluster has room for 1 to {room} worker(s) "
                              f"of {threads} CPU(s){' and a GPU' if gpus else ''} each")
    worker_job = replace(job, threads=threads, device="cuda" if gpus else "cpu")  # Ray picks each worker's GPU
    return requested or room, worker_job, {"num_cpus": threads, "num_gpus": 1 if gpus else 0}


def generate_ray(job: GenerateJob, address: str | None, workers: int | None, progress: bool) -> Path:
    ray = import_ray()
    owned = connect_ray(ray, address)
    try:
        return drive_ray(ray, job, workers, progress)
    finally:
        if owned:
            ray.shutdown()


def drive_ray(ray: ModuleType, job: GenerateJob, workers: int | None, progress: bool) -> Path:
    """The first worker prepares the folder and lists what is left; the batches then go to whichever
    worker is free; the first worker writes the manifest. The driver touches no file, so it may run
    anywhere that reaches the cluster, as long as the workers share the workspace's filesystem."""
    count, worker_job, reservation = ray_workers(ray.cluster_resources(), job, workers)
    actor = ray.remote(max_restarts=0, **reservation)(DatasetWorker)
    first = actor.remote(worker_job)
    actors = [first]
    try:
        todo = ray_call(ray, first.prepare.remote(), "preparing the dataset")
        actors += [actor.remote(worker_job) for _ in range(min(count, len(todo)) - 1)]
        done = job.n - sum(map(len, todo))
        with progress_bar(total=job.n, initial=done, show=progress, desc=f"generating {job.name} on Ray",
                          unit="sample") as bar:
            dispatch(ray, actors, todo, bar)
        return ray_call(ray, first.finish.remote(), "writing the manifest")
    finally:
        for handle in actors:
            ray.kill(handle)


def dispatch(ray: ModuleType, actors: list, todo: list[range], bar) -> None:
    """Keep every worker busy with one batch at a time until none is left; the first failure stops
    the run with the batch it was making."""
    queue, running = deque(todo), {}

    def send(worker) -> None:
        if queue:
            batch = queue.popleft()
            running[worker.run.remote(batch)] = (worker, batch)

    for worker in actors:
        send(worker)
    while running:
        [ref], _ = ray.wait(list(running), num_returns=1)
        worker, batch = running.pop(ref)
        try:
            bar.update(ray.get(ref))
        except ray.exceptions.RayError as exc:
            raise ray_failure(exc, batch) from None
        send(worker)


def ray_call(ray: ModuleType, ref, what: str):
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        raise ray_failure(exc, None, what) from None


def ray_failure(exc: Exception, batch: range | None, what: str = "") -> DatasetGANError:
    """A worker's failure on one line: its own error (a batch's already names it), else why it died."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, DatasetGANError):
        return cause
    reason = describe(cause) if cause is not None else f"its Ray worker died ({last_error_line(str(exc))})"
    return batch_failed(batch, reason) if batch is not None else DatasetGANError(f"{what} on Ray failed: {reason}")


def last_error_line(text: str) -> str:
    """The `SomeError: message` line of a traceback Ray hands back as text, else its first line."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    errors = [line.strip() for line in plain.splitlines() if re.match(r"\s*\w+(Error|Exception)\b", line)]
    return errors[-1] if errors else plain.strip().splitlines()[0]


# ---- torchrun ----------------------------------------------------------------------------------


def torchrun_rank(environ: Mapping[str, str]) -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them."""
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        raise DatasetGANError("--engine torchrun needs RANK and WORLD_SIZE: start it with "
                              "`torchrun --nproc-per-node K -m datasetgan generate ...`") from None
    return rank, world, int(environ.get("LOCAL_RANK", 0))


def rank_device(device: str, local_rank: int) -> torch.device:
    """The rank's own GPU (cuda:LOCAL_RANK) where the device is CUDA without an index."""
    resolved = resolve_device(device)
    if resolved.type != "cuda" or resolved.index is not None:
        return resolved
    if local_rank >= torch.cuda.device_count():
        raise DatasetGANError(f"rank with LOCAL_RANK {local_rank} has no GPU: this node has "
                              f"{torch.cuda.device_count()}; start at most that many ranks per node (or --device cpu)")
    return torch.device("cuda", local_rank)


def generate_torchrun(job: GenerateJob, environ: Mapping[str, str], progress: bool) -> Path:
    """Rank r makes every WORLD_SIZE-th unfinished batch, starting at r; rank 0 then waits for all
    batch records and finalises. A gloo process group only orders the start: rank 0 prepares the
    folder before anyone writes, and every rank lists the unfinished batches before anyone makes
    one, so all split the same list. It is closed before generating: a rank that fails makes
    torchrun stop the others, and rank 0's wait has its own stall timeout."""
    import torch.distributed as dist

    rank, world, local_rank = torchrun_rank(environ)
    worker = DatasetWorker(job, rank_device(job.device, local_rank))
    dist.init_process_group("gloo")  # from torchrun's MASTER_ADDR and MASTER_PORT
    try:
        if rank == 0:
            worker.prepare()
        dist.barrier()
        todo = worker.pending()
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank != 0:
        for batch in todo[rank::world]:
            worker.run(batch)
        return worker.folder
    with progress_bar(total=job.n, initial=job.n - sum(map(len, todo)), show=progress,
                      desc=f"generating {job.name} on {world} rank(s)", unit="sample") as bar:
        for batch in todo[::world]:
            worker.run(batch)
            bar.update(job.n - sum(map(len, worker.pending())) - bar.n)  # every rank's batches
        wait_for_batches(worker, bar)
    return worker.finish()


def wait_for_batches(worker: DatasetWorker, bar, stall_s: float = STALL_TIMEOUT_S, poll_s: float = POLL_S) -> None:
    """Rank 0's wait for the other ranks' batch records; an error when none appears for `stall_s`."""
    seen, last_change = None, time.monotonic()
    while todo := worker.pending():
        done = worker.job.n - sum(map(len, todo))
        if done != seen:
            bar.update(done - bar.n)  # a bar that is not drawn ignores updates: `seen` is the state
            seen, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            first = ", ".join(factory.batch_name(b) for b in todo[:5])
            raise DatasetGANError(f"rank 0 waited {stall_s / 60:.0f} min without a new batch; {len(todo)} missing "
                                  f"(first seeds: {first}): did a rank stop? run the same command again to resume")
        time.sleep(poll_s)
