#!/usr/bin/env bash
# Writes bot/symbol-order.txt (or bot/symbol-order.musl.txt for the static musl build): the
# functions of the release `baton` that a run executes, in the order the linker is to place them
# at the start of the program's code (bot/build.rs passes the file to LLD). A run executes about
# 3-4 MiB of a 17.8 MiB program's code; laid out together, those functions fill fewer pages, and
# fewer pages of the executable are resident (docs/performance.md, "The code a run executes,
# linked together").
#
#   scripts/order-symbols.sh [runs]                       # the glibc build, target/release/baton
#   scripts/order-symbols.sh [runs] x86_64-unknown-linux-musl   # the static build (needs musl-gcc)
#
# runs: measured runs per size of bot_fanout, default 2 (the second grows the journal's tables
# past the first's, and SQLite then runs code the first never did).
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
#   3. keeps every function with an executed instruction (scripts/order_symbols.py): Rust, the
#      standard library, SQLite, ring's C and assembly. What `baton run` executes on console
#      chat comes first, then what a run on XMPP adds, then what only the demo and the one-shot
#      commands execute, hottest first within each group: a run's resident code is then about
#      the code it executes, not all the code any of the runs executes;
#   4. writes the order file.
# Then rebuild (`cargo build --release -p baton [--target ...]`) to link with the new order.
# Needs no root; needs valgrind (`apt-get install -y valgrind`), what bot_fanout needs
# (scripts/test.sh installs it) and about 20 minutes on 2 cores (most of it the builds).
#
# What callgrind cannot see: code chosen by CPU features valgrind does not emulate (ring's
# VAES and AVX2 AES-GCM, SHA extensions). Those few functions stay where the linker puts them.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-2}"
triple="${2:-x86_64-unknown-linux-gnu}"
case "$triple" in
    x86_64-unknown-linux-gnu) target_args=(); built=target/release/baton; out=bot/symbol-order.txt ;;
    x86_64-unknown-linux-musl)
        target_args=(--target "$triple"); built="target/$triple/release/baton"
        out=bot/symbol-order.musl.txt ;;
    *) echo "no symbol order for $triple (x86_64-unknown-linux-gnu or -musl)" >&2; exit 2 ;;
esac
work="${ORDER_WORK:-$(mktemp -d)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
if ! command -v valgrind > /dev/null; then
    echo "valgrind is missing: apt-get install -y valgrind" >&2
    exit 1
fi
export CARGO_INCREMENTAL=0

echo "1/4 release build with a link map"
BATON_LINK_MAP="$work/baton.map" cargo build --release -p baton --bin baton --locked "${target_args[@]}"
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
cp "$built" "$mapped"
rm -rf "$work/callgrind"
mkdir -p "$work/callgrind"
# The benchmarks start target/release/baton; what was there goes back afterwards.
saved="$work/baton.before"
if [ -e target/release/baton ]; then cp target/release/baton "$saved"; else rm -f "$saved"; fi
restore() { if [ -e "$saved" ]; then cp "$saved" target/release/baton; else rm -f target/release/baton; fi; }
trap restore EXIT
# The benchmarks start target/release/baton: a script in its place runs the mapped binary under
# callgrind, with the arguments it was given. Each file is named after the run that wrote it:
# BATON_ORDER_RUN (set below for each program) and baton's subcommand, e.g. fanout-run.<pid>.out.
cat > target/release/baton <<EOF
#!/bin/sh
sub=\$(printf %s "\$1" | tr -c 'a-z' '_')
exec valgrind -q --tool=callgrind --dump-instr=yes --dump-every-bb=2000000 \\
    --callgrind-out-file="$work/callgrind/\${BATON_ORDER_RUN:-other}-\$sub.%p.out" "$mapped" "\$@"
EOF
chmod +x target/release/baton
BATON_ORDER_RUN=story target/release/baton demo < examples/story.chat > /dev/null
BATON_ORDER_RUN=fanout "$fanout" "$runs" | grep -E "^(fan-out|step to|baton resident)" || true
BATON_ORDER_RUN=xmpp "$latency" 100 | grep -E "p50|VmHWM" || true
restore
trap - EXIT

echo "3/4 executed functions ($(ls "$work/callgrind" | wc -l) callgrind files)"
# The runs in the order their code is laid out (order_symbols.py): `baton run` on console chat
# (bot_fanout: the engine, the store, the dispatcher, DNS, the probes), then what a run on XMPP
# adds, then what only the demo and the one-shot commands the benchmarks call (`baton audit`)
# execute.
shopt -s nullglob
runs_first=("$work"/callgrind/fanout-run.* "$work"/callgrind/xmpp-run.*)
if [ "${#runs_first[@]}" -eq 0 ]; then
    echo "no callgrind file of a 'baton run' (fanout-run.*, xmpp-run.*) in $work/callgrind" >&2
    exit 1
fi
python3 scripts/order_symbols.py "$work/baton.map" "$mapped" "${runs_first[@]}" \
    "$work"/callgrind/story-demo.* "$work"/callgrind/* > "$work/order.txt"

echo "4/4 writing $out"
mv "$work/order.txt" "$out"
wc -l "$out"
echo "the callgrind files and the link map stay in $work"
echo "now: cargo build --release -p baton --bin baton ${target_args[*]} (links with the new order)"
