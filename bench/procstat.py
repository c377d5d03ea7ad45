"""What /proc says about the broker's worker processes: CPU time used and memory held."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


@dataclass(frozen=True)
class Memory:
    rss_kib: int  # resident set
    pss_kib: int  # proportional share: pages shared with the other workers counted once

    def __str__(self) -> str:
        return f"RSS {self.rss_kib / 1024:.1f} MiB, PSS {self.pss_kib / 1024:.1f} MiB"


def memory(pid: int) -> Memory:
    values = {"Rss:": 0, "Pss:": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if name in values:
                    values[name] = int(rest.split()[0])
    except OSError:
        pass
    return Memory(values["Rss:"], values["Pss:"])
