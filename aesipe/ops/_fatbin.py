"""Which GPU code a built CUDA library carries: the entries of its ``.nv_fatbin`` ELF section.

nvcc embeds one fat binary container per CUDA translation unit in the host library's ``.nv_fatbin`` section.
A container is a 16-byte header (magic 0xBA55ED50, version, header size, then the size of the entries that
follow) and entries, each a header and its payload; in an entry header, the kind (1 = PTX, 2 = ELF cubin) is
the first 16-bit word, the header's own size the 32-bit word at byte 4, the payload size the 64-bit word at
byte 8 and the SM version (80 for 8.0) the 32-bit word at byte 28. That is all this reads, so it needs no
CUDA tools: the toolkit's ``cuobjdump`` is not always installed (here it is not).

``cuda_code(path)`` -> e.g. ``["sm_80", "sm_90", "compute_90"]``: cubins for those GPUs, and PTX that the
driver compiles for newer ones.
"""
from __future__ import annotations

import struct
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
SECTION = ".nv_fatbin"
_PREFIX = {1: "compute", 2: "sm"}  # entry kind -> how nvcc's -gencode names it


def elf_section(data: bytes, name: str) -> bytes | None:
    """The contents of section ``name`` of a 64-bit little-endian ELF file, or None if it has none."""
    if data[:4] != b"\x7fELF" or data[4:6] != b"\x02\x01":
        raise ValueError("not a 64-bit little-endian ELF file")
    (table,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)

    def header(index: int) -> tuple[int, int, int]:  # (name offset, file offset, size)
        name_at, _kind, _flags, _address, offset, size = struct.unpack_from("<IIQQQQ", data, table + index * entry_size)
        return name_at, offset, size

    names = header(names_index)[1]
    for index in range(count):
        name_at, offset, size = header(index)
        start = names + name_at
        if data[start:data.index(b"\0", start)] == name.encode():
            return data[offset:offset + size]
    return None


def fatbin_entries(blob: bytes) -> list[str]:
    """``kind_arch`` of every entry of every container in ``blob`` (a ``.nv_fatbin`` section), in order."""
    found, pos = [], 0
    while pos + 16 <= len(blob):
        magic, _version, header_size, entries_size = struct.unpack_from("<IHHQ", blob, pos)
        if magic != FATBIN_MAGIC:  # padding between containers, which start 8-byte aligned
            pos += 8
            continue
        entry, end = pos + header_size, pos + header_size + entries_size
        while entry + 32 <= end:
            kind, _version, entry_header, payload = struct.unpack_from("<HHIQ", blob, entry)
            (arch,) = struct.unpack_from("<I", blob, entry + 28)
            if entry_header == 0:
                break
            if kind in _PREFIX:
                found.append(f"{_PREFIX[kind]}_{arch}")
            entry += entry_header + payload
        pos = max(end, pos + 16)
    return found


def cuda_code(library: str | Path) -> list[str]:
    """Sorted, without repeats: ``sm_XY`` per cubin and ``compute_XY`` per PTX in ``library`` ([] if it has none)."""
    section = elf_section(Path(library).read_bytes(), SECTION)
    entries = set(fatbin_entries(section)) if section else set()
    return sorted(entries, key=lambda e: (e.startswith("compute"), int(e.split("_")[1])))
