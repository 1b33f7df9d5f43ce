#!/usr/bin/env python3
"""Prints the symbol order for `baton` (bot/symbol-order.txt), one exact symbol per line,
hottest first: the functions an instrumented run executed (then the standard library's) (`llvm-profdata show --all-functions
--counts`), as named in a release build's link map (LLD's `-Map`). Built with the same profile
settings, the two builds give a function the same name, hash included: exact matches come
first, then the release build's functions whose demangled name (`c++filt`, without the hash)
is that of a function that ran (the release build merges identical copies under one name). Called by scripts/order-symbols.sh.

    order_symbols.py FUNCTIONS.txt BATON.map > bot/symbol-order.txt
"""

import re
import subprocess
import sys


def executed(path):
    """{mangled name: largest counter} of every function with a counter above zero."""
    counts = {}
    name = None
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^  (\S.*):$", line)
        if m:
            name = m.group(1)
            # A local function is named "<file>;<symbol>".
            name = name.rsplit(";", 1)[-1]
            continue
        if name is None:
            continue
        m = re.match(r"^\s+(?:Block counts|Function count): \[?([^\]]*)\]?$", line)
        if m:
            values = [int(v) for v in re.findall(r"\d+", m.group(1))]
            top = max(values, default=0)
            if top > 0:
                counts[name] = max(counts.get(name, 0), top)
    return counts


def text_symbols(path):
    """Every function in the map's `.text` output section, in link order. LLD's map names each
    input section (`file:(.text.<symbol>)`, one per function) and the symbols defined in it."""
    names = []
    seen = set()
    in_text = False
    for line in open(path, encoding="utf-8", errors="replace"):
        # VMA, LMA, size, alignment, then the name: 1 space before an output section, more
        # before an input section or a symbol.
        m = re.match(r"^\s*[0-9a-f]+\s+[0-9a-f]+\s+[0-9a-f]+\s+\d+( +)(.*)$", line.rstrip("\n"))
        if not m:
            continue
        depth = len(m.group(1))
        what = m.group(2).strip()
        if depth <= 1:
            # An output section.
            in_text = what == ".text"
            continue
        if not in_text:
            continue
        m = re.search(r":\(\.text\.(.+)\)$", what)
        if m:
            # `.text.<symbol>`, or `.text.unlikely.<symbol>` for code the compiler deems cold.
            symbol = re.sub(r"^(unlikely|hot|startup|exit|split)\.", "", m.group(1))
        else:
            symbol = what if " " not in what and ":(" not in what else None
        if symbol and symbol not in seen:
            seen.add(symbol)
            names.append(symbol)
    return names


def demangle(names):
    """Demangled names without the hash a legacy-mangled name ends with (`::h0123...`)."""
    out = subprocess.run(
        ["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True, check=True
    ).stdout.splitlines()
    if len(out) != len(names):
        sys.exit(f"c++filt returned {len(out)} names for {len(names)}")
    return [re.sub(r"::h[0-9a-f]{16}$", "", name) for name in out]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    counts = executed(sys.argv[1])
    if not counts:
        sys.exit(f"{sys.argv[1]}: no function with a counter above zero")
    symbols = text_symbols(sys.argv[2])
    if not symbols:
        sys.exit(f"{sys.argv[2]}: no .text symbols (is it LLD's -Map output?)")
    # The instrumented build and the release build have the same profile settings, so the
    # same names: those are taken exactly, hottest first. Then, by demangled name, the other
    # instances of what ran: the release build merges functions whose code is identical (the
    # same generic function instantiated in several crates) and keeps one name, maybe that of
    # a copy that never ran, while the instrumented build, counters in every copy, merges none.
    hot = {}
    for name, plain in zip(counts, demangle(list(counts))):
        hot[plain] = max(hot.get(plain, 0), counts[name])
    exact = [(0, -counts[s], i, s) for i, s in enumerate(symbols) if s in counts]
    named = {s for *_, s in exact}
    alike = [
        (1, -hot[plain], i, s)
        for i, (s, plain) in enumerate(zip(symbols, demangle(symbols)))
        if plain in hot and s not in named
    ]
    chosen = exact + alike
    how = f"{len(exact)} by exact name, {len(alike)} by demangled name"
    chosen.sort()
    # Then the standard library's own functions (v0-mangled, `_R`): they come compiled, without
    # counters, so the profile cannot tell which ran; there are few (0.4 MiB in all).
    named = {s for *_, s in chosen}
    std = [s for s in symbols if s.startswith("_R") and s not in named]
    for symbol in [s for *_, s in chosen] + std:
        print(symbol)
    print(
        f"{len(counts)} functions executed; of the release build's {len(symbols)} functions "
        f"{how}, then {len(std)} of the standard library",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
