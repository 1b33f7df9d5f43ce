#!/usr/bin/env python3
"""Where the CPU goes during fan-out steps, from a system-wide `perf record` of `bot_fanout`.

Reads `perf script --show-task-events` output (see scripts/profile-fanout.sh), finds every
fan-out burst (a cluster of simulator samples: the agents starting their 1 s actions, or ending
them), and prints, per burst, the CPU time each kind of process used in it:

- baton: the bot (every thread of the `baton` process);
- agents: the `baton-agent` processes, including their forked children before those exec;
- simulators: the `baton-lync-sim` processes the agents start;
- harness, prosody, named, other, and idle (the `swapper` of an idle CPU).

Samples are converted to milliseconds with the sampling frequency given as the first argument.
"""

import collections
import re
import sys

EVENT = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+([\d.]+):\s+PERF_RECORD_(\w+)(.*)$")
SAMPLE = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+([\d.]+):\s*$")
FORK = re.compile(r"\((\d+):\d+\):\((\d+):\d+\)")


def kind_of(name):
    if name == "baton":
        return "baton"
    if name == "baton-agent":
        return "agents"
    if name == "baton-lync-sim":
        return "simulators"
    if name.startswith("bot_fanout"):
        return "harness"
    if name.startswith("lua"):
        return "prosody"
    if name in ("named", "isc-net-0000") or name.startswith("isc-"):
        return "named"
    return "other"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: profile_fanout.py <sampling frequency in Hz> <perf script output>")
    hz = float(sys.argv[1])
    exec_name = {}  # pid -> (time of exec, name)
    parent = {}  # pid -> parent pid
    samples = []  # (time, pid, comm)
    with open(sys.argv[2], encoding="utf-8", errors="replace") as f:
        for line in f:
            m = EVENT.match(line)
            if m:
                comm, pid, _tid, t, kind, rest = m.groups()
                if kind == "COMM" and rest.startswith(" exec:"):
                    exec_name.setdefault(int(pid), (float(t), rest.split(":")[1].strip()))
                elif kind == "FORK":
                    fm = FORK.search(rest)
                    if fm and fm.group(1) != fm.group(2):
                        child, par = int(fm.group(1)), int(fm.group(2))
                        if child not in parent:
                            parent[child] = par
                continue
            m = SAMPLE.match(line)
            if m:
                comm, pid, _tid, t = m.groups()
                samples.append((float(t), int(pid), comm))

    def kind(t, pid, comm):
        if pid == 0:
            return "idle"
        seen = exec_name.get(pid)
        if seen and t >= seen[0]:
            return kind_of(seen[1])
        # Before its exec (or a process started before the recording): its parent's kind.
        par = parent.get(pid)
        if par is not None and par in exec_name:
            return kind_of(exec_name[par][1])
        return kind_of(comm)

    classed = [(t, kind(t, pid, comm)) for t, pid, comm in samples]
    sims = sorted(t for t, k in classed if k == "simulators")
    if not sims:
        sys.exit("no simulator samples: was bot_fanout running during the recording?")
    bursts, start, prev = [], sims[0], sims[0]
    for t in sims[1:]:
        if t - prev > 0.3:
            bursts.append((start, prev))
            start = t
        prev = t
    bursts.append((start, prev))
    kinds = ["baton", "agents", "simulators", "harness", "prosody", "named", "other", "idle"]
    print(f"CPU ms per fan-out burst (perf samples at {hz:.0f} Hz per CPU; a burst is a cluster of simulator samples, widened by 50 ms before it)")
    print(f"{'burst (s into the recording)':<30}" + "".join(f"{k:>11}" for k in kinds))
    first = samples[0][0] if samples else 0.0
    for a, b in bursts:
        n = sum(1 for t in sims if a <= t <= b)
        if n < 20:
            continue
        c = collections.Counter(k for t, k in classed if a - 0.05 <= t <= b)
        label = f"{a - first:8.2f}-{b - first:.2f} ({b - a + 0.05:.2f} s)"
        print(f"{label:<30}" + "".join(f"{1000.0 * c[k] / hz:>11.0f}" for k in kinds))


if __name__ == "__main__":
    main()
