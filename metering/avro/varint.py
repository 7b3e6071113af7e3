"""Avro's zig-zag varints, written and read one way for every hand-written codec.

The SDK's UsageEvent encoder, the processor's LedgerEntry encoder and UsageEvent decoder, and
the sink's Avro container writer all need ``long``s on their hot paths; this module is the one
implementation they share (fastavro is the reference the tests hold them to).
"""

from __future__ import annotations

LONG_MIN = -(1 << 63)
LONG_MAX = (1 << 63) - 1
TABLE_LIMIT = 1 << 14
"""Zig-zag values below this (at most 2 bytes) come from :data:`SMALL`, pre-encoded."""


def _unsigned(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


SMALL: tuple[bytes, ...] = tuple(_unsigned(z) for z in range(TABLE_LIMIT))
"""``SMALL[z]`` is the varint of the zig-zag value ``z`` (``z = n << 1`` for ``n >= 0``)."""


def encode_long(n: int) -> bytes:
    """Avro ``long``: zig-zag then base-128 varint."""
    if 0 <= n < TABLE_LIMIT >> 1:
        return SMALL[n << 1]
    if not LONG_MIN <= n <= LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    if z < TABLE_LIMIT:
        return SMALL[z]
    return _unsigned(z)


def encode_offset(n: int) -> bytes:
    """:func:`encode_long` for the non-negative values the sink writes once per record
    (partitions, offsets): unrolled up to 4 bytes (offsets below 2^27), a deliberate twin."""
    z = n << 1
    if z < 0x80:
        return bytes((z,))
    if z < 0x4000:
        return bytes((z & 0x7F | 0x80, z >> 7))
    if z < 0x200000:
        return bytes((z & 0x7F | 0x80, (z >> 7) & 0x7F | 0x80, z >> 14))
    if z < 0x10000000:
        return bytes((z & 0x7F | 0x80, (z >> 7) & 0x7F | 0x80, (z >> 14) & 0x7F | 0x80, z >> 21))
    return encode_long(n)


def encode_string(s: str) -> bytes:
    """Avro ``string``: byte length then UTF-8 bytes."""
    b = s.encode()
    n = len(b)
    return (SMALL[n << 1] if n < TABLE_LIMIT >> 1 else encode_long(n)) + b


def decode_long(b: bytes, pos: int) -> tuple[int, int]:
    """The ``long`` at ``b[pos:]`` and the position after it."""
    byte = b[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = b[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")
    return (n >> 1) ^ -(n & 1), pos
