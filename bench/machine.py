"""What machine a benchmark ran on, for the rows of docs/benchmarks.md."""
from __future__ import annotations

import os
import platform


def describe() -> str:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} cores (nproc), {mem_gib:.0f} GiB{', ' + cpu if cpu else ''}, {platform.system()}"
