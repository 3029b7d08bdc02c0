"""Peak resident memory of a whole process tree, sampled (Linux ``/proc``).

Every process started by a command counts -- worker processes, TensorFlow's, pytest's
subprocesses -- summed at each sample, which is what a cluster's memory limit sees
(shared pages are counted once per process, so the figure errs on the high side).

Usage::

    python benchmarks/process_memory.py [--interval 0.2] -- COMMAND [ARG ...]

prints the command's exit status, wall time and peak memory of its process tree.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(current, []))
    return total


def peak_tree_memory(command: list[str], *, interval: float = 0.2,
                     **popen) -> tuple[int, int, float]:
    """Run ``command``; returns (exit status, peak bytes of its process tree, seconds)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, **popen)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        time.sleep(interval)
    return process.returncode, peak, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    status, peak, seconds = peak_tree_memory(command, interval=args.interval)
    print(f"exit status {status}, {seconds:.1f} s, peak memory of the process tree "
          f"{peak / 2**20:.0f} MiB", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
