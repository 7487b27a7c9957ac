"""Closed ranges of sequence numbers, as acks, rejects and eviction reports carry them."""

from collections.abc import Iterable

Ranges = list[tuple[int, int]]


def to_ranges(seqs: Iterable[int]) -> Ranges:
    """Sorted, merged closed ranges covering exactly ``seqs``: [1,2,3,7] -> [(1,3),(7,7)]."""
    out: Ranges = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def count(ranges: Ranges) -> int:
    return sum(b - a + 1 for a, b in ranges)


def contains(ranges: Ranges, seq: int) -> bool:
    return any(a <= seq <= b for a, b in ranges)
