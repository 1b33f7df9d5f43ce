#!/usr/bin/env bash
# Where the CPU goes while Baton fans one step out to 100 agents on this machine: records every
# CPU with `perf record -a` while `bot_fanout` runs, then prints, per fan-out burst, how many
# milliseconds of CPU the bot, the agents, the simulators and the rest used
# (scripts/profile_fanout.py). Needs perf (linux-perf) and root (or perf_event_paranoid <= -1),
# and the release binaries: cargo build --release -p baton -p baton-agent -p baton-lync-sim --bins
#
#   scripts/profile-fanout.sh [runs]      # default 1 measured run per size
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
hz=999
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo bench -p baton-e2e --bench bot_fanout --no-run --locked
perf record -a -F "$hz" -o "$out/perf.data" -- \
    cargo bench -p baton-e2e --bench bot_fanout --locked -- "$runs" 2>&1 \
    | grep -E "^(fan-out|command|step to|  where|  \()"
perf script -i "$out/perf.data" --show-task-events -F comm,pid,tid,time > "$out/perf.txt" 2>/dev/null
python3 scripts/profile_fanout.py "$hz" "$out/perf.txt"
