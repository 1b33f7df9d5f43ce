#!/usr/bin/env bash
# Writes bot/symbol-order.txt: the functions of the release `baton` that a run executes, in the
# order the linker is to place them at the start of the program's code (bot/build.rs passes the
# file to LLD). A run touches a few MiB of a 23 MiB program; laid out together, those functions
# fill fewer pages, and fewer pages of the executable are resident (docs/performance.md, "The
# code a run executes, linked together").
#
#   scripts/order-symbols.sh [runs]     # default 1 measured run per size of bot_fanout
#
# What it does, in five steps:
#   1. builds `baton` instrumented (-C profile-generate) in target/pgo, with the release
#      profile unchanged (then its functions have the names, hashes included, of the release
#      build's: RUSTFLAGS and the target folder do not change them, profile settings do);
#   2. runs it, in place of target/release/baton: the demo (examples/story.chat), bot_fanout
#      (`baton run` with 10 and 100 agents, BIND, Prosody) and xmpp_bot_latency (`baton run` in
#      a Prosody room: commands, bursts, a failover);
#   3. merges the profiles (llvm-profdata, from `rustup component add llvm-tools`) and keeps
#      every function with a counter above zero;
#   4. builds the release `baton` with BATON_LINK_MAP set, for the names of its functions;
#   5. keeps the functions of 4 that 3 found executed (scripts/order_symbols.py): those by
#      exact name, hottest first, then the other instances of what ran (by demangled name),
#      then the standard library's own functions.
# Then rebuild (`cargo build --release -p baton`) to link with the new order. Needs no root;
# needs what bot_fanout needs (scripts/test.sh installs it) and about 45 minutes on
# 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
work="${ORDER_WORK:-$(mktemp -d)}"
sysroot="$(rustc --print sysroot)"
profdata="$(find "$sysroot" -name llvm-profdata -type f | head -n1)"
if [ -z "$profdata" ]; then
    echo "llvm-profdata is missing: rustup component add llvm-tools" >&2
    exit 1
fi
export CARGO_INCREMENTAL=0

echo "1/5 instrumented build (target/pgo)"
# -disable-preinline: without it LLVM inlines small functions into their callers before it
# adds the counters, and a function the release build calls out of line reads as never run.
RUSTFLAGS="-Cprofile-generate=$work/raw -Cllvm-args=-disable-preinline" \
    cargo build --release -p baton --bin baton --locked --target-dir target/pgo
instrumented="target/pgo/release/baton"

echo "2/5 runs with the instrumented baton"
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
rm -rf "$work/raw"
if [ -e target/release/baton ]; then
    cp target/release/baton "$work/baton.release"
    restore() { cp "$work/baton.release" target/release/baton; }
else
    restore() { rm -f target/release/baton; }
fi
trap restore EXIT
cp "$instrumented" target/release/baton
target/release/baton demo < examples/story.chat > /dev/null
"$fanout" "$runs" | grep -E "^(fan-out|step to|baton resident)" || true
"$latency" 100 | grep -E "p50|VmHWM" || true
restore
trap - EXIT

echo "3/5 merging $(ls "$work/raw" | wc -l) profiles"
"$profdata" merge -o "$work/merged.profdata" "$work/raw"
"$profdata" show --all-functions --counts "$work/merged.profdata" > "$work/functions.txt"

echo "4/5 release build with a link map"
BATON_LINK_MAP="$work/baton.map" BATON_NO_SYMBOL_ORDER=1 \
    cargo build --release -p baton --bin baton --locked

echo "5/5 writing bot/symbol-order.txt"
python3 scripts/order_symbols.py "$work/functions.txt" "$work/baton.map" > "$work/order.txt"
mv "$work/order.txt" bot/symbol-order.txt
wc -l bot/symbol-order.txt
echo "the profiles and the link map stay in $work"
echo "now: cargo build --release -p baton --bin baton (links with the new order)"
