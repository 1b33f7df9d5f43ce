#!/usr/bin/env bash
# Writes bot/symbol-order.txt: the functions of the release `baton` that a run executes, in the
# order the linker is to place them at the start of the program's code (bot/build.rs passes the
# file to LLD). A run executes about 4.5 MiB of a 17.8 MiB program's code; laid out together,
# those functions fill fewer pages, and fewer pages of the executable are resident
# (docs/performance.md, "The code a run executes, linked together").
#
#   scripts/order-symbols.sh [runs]     # default 1 measured run per size of bot_fanout
#
# What it does, in four steps:
#   1. builds the release `baton` with BATON_LINK_MAP set (LLD's -Map: where each function of
#      this very binary lies), and what the benchmarks start beside it;
#   2. runs that binary under callgrind (`valgrind --tool=callgrind --dump-instr=yes`), in
#      place of target/release/baton: the demo (examples/story.chat), bot_fanout (`baton run`
#      with 10 and 100 agents, BIND, Prosody) and xmpp_bot_latency (`baton run` in a Prosody
#      room: commands, bursts, a failover). The benchmarks end the bot with SIGKILL, so
#      callgrind writes its counts every few million blocks (--dump-every-bb) rather than at
#      exit; what ran after the last such dump is not counted;
#   3. keeps every function with an executed instruction, hottest first
#      (scripts/order_symbols.py): Rust, the standard library, SQLite, ring's C and assembly;
#   4. writes bot/symbol-order.txt.
# Then rebuild (`cargo build --release -p baton`) to link with the new order. Needs no root;
# needs valgrind (`apt-get install -y valgrind`), what bot_fanout needs (scripts/test.sh
# installs it) and about 20 minutes on 2 cores (most of it the builds).
#
# What callgrind cannot see: code chosen by CPU features valgrind does not emulate (ring's
# VAES and AVX2 AES-GCM, SHA extensions). Those few functions stay where the linker puts them.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
work="${ORDER_WORK:-$(mktemp -d)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
if ! command -v valgrind > /dev/null; then
    echo "valgrind is missing: apt-get install -y valgrind" >&2
    exit 1
fi
export CARGO_INCREMENTAL=0

echo "1/4 release build with a link map"
BATON_LINK_MAP="$work/baton.map" cargo build --release -p baton --bin baton --locked
cargo build --release -p baton-agent -p baton-lync-sim --bins --locked
bench() {
    cargo bench -p baton-e2e --bench "$1" --no-run --locked --message-format=json \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
fanout="$(bench bot_fanout)"
latency="$(bench xmpp_bot_latency)"

echo "2/4 runs under callgrind"
mapped="$work/baton"
cp target/release/baton "$mapped"
rm -rf "$work/callgrind"
mkdir -p "$work/callgrind"
restore() { cp "$mapped" target/release/baton; }
trap restore EXIT
# The benchmarks start target/release/baton: a script in its place runs the mapped binary under
# callgrind, with the arguments it was given.
cat > target/release/baton <<EOF
#!/bin/sh
exec valgrind -q --tool=callgrind --dump-instr=yes --dump-every-bb=2000000 \\
    --callgrind-out-file="$work/callgrind/baton.%p.out" "$mapped" "\$@"
EOF
chmod +x target/release/baton
target/release/baton demo < examples/story.chat > /dev/null
"$fanout" "$runs" | grep -E "^(fan-out|step to|baton resident)" || true
"$latency" 100 | grep -E "p50|VmHWM" || true
restore
trap - EXIT

echo "3/4 executed functions ($(ls "$work/callgrind" | wc -l) callgrind files)"
python3 scripts/order_symbols.py "$work/baton.map" "$mapped" "$work/callgrind"/* > "$work/order.txt"

echo "4/4 writing bot/symbol-order.txt"
mv "$work/order.txt" bot/symbol-order.txt
wc -l bot/symbol-order.txt
echo "the callgrind files and the link map stay in $work"
echo "now: cargo build --release -p baton --bin baton (links with the new order)"
