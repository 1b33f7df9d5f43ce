#!/usr/bin/env python3
"""Prints which parts of a running program are resident: its executable's resident KiB per ELF
section, then every other mapping's, from /proc/<pid>/pagemap (the figures "by section" in
docs/performance.md). A page of the executable that was written (relocated data) is counted
apart, as "(written)".

    scripts/resident_sections.py PID            # e.g. $(pgrep -f 'release/baton run')
    scripts/resident_sections.py --runs PID     # also the resident runs of the executable, by
                                                # file offset

Needs to read /proc/<pid>/pagemap: the program's own user or root; readelf (binutils).
"""

import collections
import os
import re
import struct
import subprocess
import sys

PAGE = 4096
SECTION = re.compile(r"^\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)")


def sections(path):
    """[(file offset, size, name)] of the sections that occupy the file."""
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        m = SECTION.match(line)
        if m and int(m.group(3), 16) > 0 and m.group(1) != "NULL":
            found.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1)))
    return sorted(found)


def resident_pages(pid):
    """[(path, file offset of the page, written)] for every resident page of a file mapping, and
    {mapping name: resident KiB} for the rest."""
    files = []
    other = collections.Counter()
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap, open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            offset = int(fields[2], 16)
            name = fields[5] if len(fields) > 5 else "[anonymous]"
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read((end - start) // PAGE * 8)
            for k in range(len(entries) // 8):
                (entry,) = struct.unpack_from("<Q", entries, k * 8)
                if not entry >> 63 & 1:
                    continue
                if name.startswith("/"):
                    # Bit 61: a file page or shared; clear for a private copy (written).
                    files.append((name, offset + k * PAGE, not entry >> 61 & 1))
                else:
                    other[name] += PAGE // 1024
    return files, other


def main():
    args = sys.argv[1:]
    runs = "--runs" in args
    args = [a for a in args if a != "--runs"]
    if len(args) != 1 or not args[0].isdigit():
        sys.exit(__doc__)
    pid = args[0]
    exe = os.readlink(f"/proc/{pid}/exe")
    table = sections(exe)
    files, other = resident_pages(pid)
    by_section = collections.Counter()
    libraries = collections.Counter()
    offsets = []
    for path, offset, written in files:
        if path != exe:
            libraries[os.path.basename(path)] += PAGE // 1024
            continue
        offsets.append(offset)
        # The section the page starts in, else the first one it reaches into.
        name = next(
            (n for s, z, n in table if s <= offset < s + z or offset < s < offset + PAGE), "(none)"
        )
        by_section[name + (" (written)" if written else "")] += PAGE // 1024
    print(f"{exe}: {sum(by_section.values())} KiB resident")
    for name, kib in by_section.most_common():
        print(f"  {kib:8d} KiB  {name}")
    for name, kib in (libraries + other).most_common():
        print(f"{kib:10d} KiB  {name}")
    if runs:
        offsets.sort()
        first = last = None
        for offset in offsets + [None]:
            if offset is not None and last is not None and offset == last + PAGE:
                last = offset
                continue
            if first is not None:
                print(f"run {first:#x}-{last + PAGE:#x}: {(last + PAGE - first) // 1024} KiB")
            first = last = offset


if __name__ == "__main__":
    main()
