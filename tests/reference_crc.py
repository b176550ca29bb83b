"""An independent CRC-32C for the tests: bit at a time, slow, obviously right."""
from __future__ import annotations


def ref_crc32c(data: bytes, seed: int = 0) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of ``data``, chained from ``seed``."""
    crc = seed ^ 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF
