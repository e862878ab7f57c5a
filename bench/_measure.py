"""Peak memory of one measurement, each in a fresh Python process.

`ru_maxrss` is a high-water mark that never goes down, so two measurements in one process
would hide each other: each runs in its own child, which marks a baseline once imports and
shared set-up are done and reports its peak above that. Linux reports ru_maxrss in KiB.

    result = run_in_child(__file__, "function_name", key=value, ...)   # in the parent
    child_main(FUNCTIONS, sys.argv[2:])                                 # in the script, on --child

`run_in_child_capped` is `run_in_child` with a memory guard, for children that may need more
than a shared machine can give: they are killed rather than left to the kernel's OOM killer.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_baseline_mib: float | None = None
_marks: dict[str, float] = {}  # peaks at named moments before the baseline, for the report


def peak_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mark(name: str) -> None:
    """Record the peak so far under `name` (reported as `<name>_mib`)."""
    _marks[name] = peak_mib()


def mark_baseline() -> None:
    """Call in the child once imports and shared set-up are done."""
    global _baseline_mib
    _baseline_mib = peak_mib()


def memory() -> dict[str, float]:
    """Peak RSS so far, absolute and above the baseline, MiB."""
    peak = peak_mib()
    baseline = _baseline_mib if _baseline_mib is not None else 0.0
    marks = {f"{name}_mib": value for name, value in _marks.items()}
    return {"peak_mib": peak, "baseline_mib": baseline, "above_mib": peak - baseline} | marks


def run_in_child(script: str, name: str, timeout: float = 900, **kwargs) -> dict:
    """Run `name(**kwargs)` of `script` in a fresh interpreter and return its result dict."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, script, "--child", name, json.dumps(kwargs), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"child {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def child_main(functions: dict[str, Callable[..., dict]], argv: list[str]) -> None:
    """A child's entry point: run one function; its memory is taken at the end unless it
    reported its own (to leave out work done after the measurement, such as checks)."""
    name, kwargs, out = argv
    result = functions[name](**json.loads(kwargs))
    result.setdefault("memory", memory())
    Path(out).write_text(json.dumps(result))


class MemoryCap(RuntimeError):
    """A child was killed by `run_in_child_capped` before it could finish."""


def status_mib(pid: int | str = "self", field: str = "VmRSS") -> float:
    """A memory field of /proc/PID/status in MiB: VmRSS (resident now) or VmHWM (its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} for process {pid}")


def available_mib() -> float:
    """MemAvailable of the machine, MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise ValueError("no MemAvailable in /proc/meminfo")


def run_in_child_capped(script: str, name: str, cap_mib: float, reserve_mib: float = 1024,
                        timeout: float = 900, **kwargs) -> dict:
    """`run_in_child`, but the child is killed (MemoryCap) once its RSS passes `cap_mib` or the
    machine's available memory falls below `reserve_mib`. RSS is polled every 0.1 s, so a
    child can overshoot the cap by what it allocates in that time (a few hundred MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "log.txt"
        cmd = [sys.executable, script, "--child", name, json.dumps(kwargs), str(out)]
        with open(log, "w") as sink:  # a file, not a pipe: a chatty child cannot block on it
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
            reason = _guard(proc, cap_mib, reserve_mib, timeout)
        if reason:
            raise MemoryCap(f"child {name} killed: {reason}")
        if proc.returncode != 0:
            raise RuntimeError(f"child {name} failed (exit {proc.returncode}):\n{log.read_text()[-4000:]}")
        return json.loads(out.read_text())


def _guard(proc: subprocess.Popen, cap_mib: float, reserve_mib: float, timeout: float) -> str | None:
    """Wait for `proc`; kill it and say why if it breaks a limit."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            rss = status_mib(proc.pid)
        except (OSError, ValueError):  # exiting: /proc entry gone or without VmRSS
            rss = 0.0
        available = available_mib()
        reason = (f"RSS {rss:.0f} MiB over the cap of {cap_mib:.0f} MiB" if rss > cap_mib
                  else f"the machine is down to {available:.0f} MiB available" if available < reserve_mib
                  else f"still running after {timeout:.0f} s" if time.monotonic() > deadline
                  else None)
        if reason:
            proc.kill()
            proc.wait()
            return reason
        time.sleep(0.1)
    return None
