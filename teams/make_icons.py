"""Draw the Teams app icons with the standard library only (zlib + struct PNG writer).

    python -m teams.make_icons        # rewrites teams/color.png and teams/outline.png

The PNGs are committed; tests/teams checks that they are exactly what this script draws, so an edit here
without regenerating them fails the suite. The symbol is a padlock: Teams wants the colour icon (192x192)
full-bleed with the symbol inside a safe area, and the outline icon (32x32) white on transparent.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ACCENT = (0x1F, 0x4E, 0x8C)  # the manifest's accentColor (#1F4E8C)
WHITE = (0xFF, 0xFF, 0xFF)
SUPERSAMPLE = 4  # samples per pixel side, for smooth (anti-aliased) edges


def _padlock(x: float, y: float) -> bool:
    """Whether the point (x, y) in the unit square (y down) lies on the padlock's white area."""
    in_body = 0.22 <= x <= 0.78 and 0.45 <= y <= 0.86
    keyhole = (x - 0.5) ** 2 + (y - 0.6) ** 2 <= 0.055**2 or (0.478 <= x <= 0.522 and 0.6 <= y <= 0.75)
    # Shackle: the upper half of a ring centred on the body's top edge, radii 0.13..0.21.
    dx, dy = x - 0.5, y - 0.45
    radius = (dx * dx + dy * dy) ** 0.5
    ring = 0.13 <= radius <= 0.21 and dy <= 0
    return (in_body and not keyhole) or ring


def _coverage(size: int, shape: Callable[[float, float], bool], px: int, py: int) -> float:
    hits = 0
    for sy in range(SUPERSAMPLE):
        for sx in range(SUPERSAMPLE):
            x = (px + (sx + 0.5) / SUPERSAMPLE) / size
            y = (py + (sy + 0.5) / SUPERSAMPLE) / size
            hits += shape(x, y)
    return hits / SUPERSAMPLE**2


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit RGBA PNG (colour type 6) from raw rows of width * 4 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 (None) on every row
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def color_icon(size: int = 192) -> bytes:
    """Full-bleed accent background, white padlock in the middle (inside Teams' safe area)."""
    rows = []
    for py in range(size):
        row = bytearray()
        for px in range(size):
            a = _coverage(size, _padlock, px, py)
            row += bytes(round(bg + (fg - bg) * a) for bg, fg in zip(ACCENT, WHITE, strict=True)) + b"\xff"
        rows.append(bytes(row))
    return png(size, size, rows)


def outline_icon(size: int = 32) -> bytes:
    """White padlock on a transparent background (the only colours Teams accepts for this icon)."""
    rows = []
    for py in range(size):
        row = bytearray()
        for px in range(size):
            row += bytes((*WHITE, round(255 * _coverage(size, _padlock, px, py))))
        rows.append(bytes(row))
    return png(size, size, rows)


def main() -> None:
    (HERE / "color.png").write_bytes(color_icon())
    (HERE / "outline.png").write_bytes(outline_icon())
    print(f"wrote {HERE / 'color.png'} and {HERE / 'outline.png'}")


if __name__ == "__main__":
    main()
