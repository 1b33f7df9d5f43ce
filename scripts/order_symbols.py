#!/usr/bin/env python3
"""Prints the symbol order for `baton` (bot/symbol-order.txt), one symbol per line: every
function of the release build that executed under callgrind, as that build's link map (LLD's
`-Map`) names it, grouped by the runs that executed it and hottest first within a group.
Called by scripts/order-symbols.sh.

    order_symbols.py BATON.map BATON CALLGRIND.out... > bot/symbol-order.txt

Each callgrind file belongs to a run, named by the file: `<run>.<pid>.out` or
`<run>.<pid>.out.<n>` (`fanout-run.4242.out.3` is run `fanout-run`). The runs rank in the order
their first file is given. A function the first run executed comes before any it did not; among
those, one the second run executed comes first; and so on: the code of the first run is one
block at the start, and each later run's code lies in as few blocks as the runs before it allow.
Only what one run touches is resident in that run, so the run that matters most goes first
(order-symbols.sh gives the bot's runs before the demo and the one-shot commands).

The callgrind files come from `valgrind --tool=callgrind --dump-instr=yes` runs of BATON, the
very binary the map describes (its addresses are the map's); other objects in them (libc, the
loader) are passed over. Each executed instruction is looked up
in the map's `.text` input sections; a section that holds one is kept, with the instructions it
executed as its heat. LLD orders sections by a symbol they hold: the section's own name gives it
for Rust and C (`.text.<symbol>`, `.text.unlikely.<symbol>`); a plain `.text` section (assembly,
or C built without function sections) is named by the first raw symbol the map lists in it.
"""

import bisect
import os
import re
import sys

ENTRY = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+( +)(.*)$")
SECTION = re.compile(r"^(.*):\((\.text[^)]*)\)$")
PREFIX = re.compile(r"^\.text\.((unlikely|hot|startup|exit|split)\.)?")
OBJECT = re.compile(r"^c?ob=\((\d+)\)(?: (.*))?$")


def text_sections(path):
    """[(address, size, section name, [symbols listed in it])] of the `.text` output section.
    LLD's map indents an output section by 1 space, an input section by 9, a symbol by 17."""
    sections = []
    in_text = False
    for line in open(path, encoding="utf-8", errors="replace"):
        m = ENTRY.match(line.rstrip("\n"))
        if not m:
            continue
        indent = len(m.group(3))
        if indent <= 1:
            in_text = m.group(4).strip() == ".text"
            continue
        if not in_text:
            continue
        if indent > 9:
            if sections:
                sections[-1][3].append(m.group(4).strip())
            continue
        s = SECTION.search(m.group(4))
        if s:
            sections.append((int(m.group(1), 16), int(m.group(2), 16), s.group(2), []))
        else:
            # Linker-made input (padding, PLT stubs): it closes the section before it.
            sections.append((int(m.group(1), 16), int(m.group(2), 16), None, []))
    sections.sort(key=lambda s: s[0])
    return sections


def executed(path, binary):
    """{address: instructions executed there} in the object whose path is `binary`,
    from a callgrind output written with --dump-instr=yes (positions `instr line`)."""
    names = {}
    current = None
    last = 0
    after_calls = False
    counts = {}
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        first = line[0]
        if first.isalpha():
            o = OBJECT.match(line)
            if o:
                if o.group(2):
                    names[o.group(1)] = o.group(2)
                if line.startswith("ob="):
                    current = names.get(o.group(1), "")
            after_calls = line.startswith("calls=")
            continue
        if first not in "0123456789+-*":
            continue
        fields = line.split()
        pos = fields[0]
        if pos.startswith("0x"):
            address = int(pos, 16)
        elif pos[0] == "+":
            address = last + int(pos[1:], 0)
        elif pos[0] == "-":
            address = last - int(pos[1:], 0)
        else:
            address = last
        last = address
        # The line after `calls=` is the call's site with the callee's inclusive cost.
        cost = 0 if after_calls else int(fields[-1])
        after_calls = False
        if current == binary:
            counts[address] = counts.get(address, 0) + cost + 1
    return counts


def run_of(path):
    """The run a callgrind file belongs to: its name up to `.<pid>.out`."""
    name = os.path.basename(path)
    m = re.match(r"^(.*)\.\d+\.out(\.\d+)?$", name)
    return m.group(1) if m else name


def symbol_of(section):
    """The symbol LLD is to be given for this input section, or None."""
    _, _, name, listed = section
    if name is None:
        return None
    if name != ".text":
        return PREFIX.sub("", name)
    raw = [s for s in listed if "::" not in s and " " not in s]
    return raw[0] if raw else None


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: order_symbols.py BATON.map BATON CALLGRIND.out... > bot/symbol-order.txt")
    sections = text_sections(sys.argv[1])
    if not sections:
        sys.exit(f"{sys.argv[1]}: no .text input sections (is it LLD's -Map output?)")
    starts = [s[0] for s in sections]
    heat = {}
    runs = []
    ran = {}
    outside = 0
    binary = os.path.abspath(sys.argv[2])
    for path in dict.fromkeys(sys.argv[3:]):
        run = run_of(path)
        if run not in runs:
            runs.append(run)
        rank = runs.index(run)
        for address, count in executed(path, binary).items():
            i = bisect.bisect_right(starts, address) - 1
            if i >= 0 and address < sections[i][0] + sections[i][1]:
                heat[i] = heat.get(i, 0) + count
                ran.setdefault(i, set()).add(rank)
            else:
                outside += count
    if not heat:
        sys.exit(f"no executed instruction of {binary} in the callgrind files")
    names = []
    seen = set()
    unnamed = 0
    def key(i):
        return (tuple(r not in ran[i] for r in range(len(runs))), -heat[i], sections[i][0])

    for i in sorted(heat, key=key):
        name = symbol_of(sections[i])
        if name is None:
            unnamed += sections[i][1]
        elif name not in seen:
            seen.add(name)
            names.append(name)
    print("\n".join(names))
    size = sum(sections[i][1] for i in heat)
    print(
        f"{len(names)} symbols: {len(heat)} executed sections, {size / 2**20:.2f} MiB"
        f" ({unnamed} bytes in sections without a symbol; {outside} instructions outside .text)",
        file=sys.stderr,
    )
    for rank, run in enumerate(runs):
        mine = sum(sections[i][1] for i in heat if rank in ran[i])
        print(f"  run {run}: {mine / 2**20:.2f} MiB executed", file=sys.stderr)


if __name__ == "__main__":
    main()
