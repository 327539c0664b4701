"""What the loader accepts: bounds on an image, checked from its bytes before any compiler runs.

A plugin is a small driver: a few dozen functions, a few kilobytes of code. These bounds sit far
above what the bundled plugins need (largest: 11 functions, 5.6 KB of code, nesting 11, 19
locals) and far below what makes compilation slow or hungry, so an image that lies about its
size is refused in bounded time and memory, with the limit it broke named.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    name: str
    value: int
    doc: str


LIMITS: tuple[Limit, ...] = (
    Limit("image_bytes", 4 << 20, "size of the image file"),
    Limit("manifest_bytes", 4096, "size of the `npa.manifest` section"),
    Limit("types", 1024, "function types"),
    Limit("functions", 2048, "functions the image defines"),
    Limit("code_bytes", 1 << 20, "size of the code section"),
    Limit("body_bytes", 128 << 10, "size of one function body"),
    Limit("locals", 1024, "locals of one function"),
    Limit("total_locals", 32768, "locals of all functions together"),
    Limit("nesting", 128, "nesting depth of blocks, loops and ifs in one function"),
    Limit("globals", 256, "globals the image defines"),
    Limit("table_entries", 4096, "function table entries (`dylink.0` table size, tables it defines)"),
    Limit("data_segments", 256, "data segments"),
    Limit("element_segments", 256, "element segments"),
    Limit("memory_align", 16, "log2 of the alignment `dylink.0` asks for its memory (64 KiB)"),
    Limit("table_align", 16, "log2 of the alignment `dylink.0` asks for its table"),
)
LIMIT = {lim.name: lim.value for lim in LIMITS}
