"""Block planning for Modbus polling: which requests read a device's points. Pure, no I/O.

A gateway that reads one register per request spends its time on round trips: a request for 100
registers costs about as much as a request for one. So the points of one table that are polled on
one interval are merged into as few requests as the protocol and the device allow:

- points are sorted by address; a block grows while the next point starts no more than
  ``max_gap`` units past the block's end. The gap is read and thrown away: cheaper than another
  round trip. Some devices refuse a read that covers an address they do not implement; for those
  the installer sets the gap to 0;
- a block never exceeds the device's limit: 125 registers or 2,000 bits by the protocol, less
  where the device says so (``max_registers`` / ``max_bits``);
- different tables and different poll intervals are never merged: a fast point must not drag a
  slow block along, and one request reads one table.

Greedy extension over address-sorted points gives the fewest blocks for these constraints (each
block reaches as far as it can; no later split can cover the remaining points with fewer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Table = Literal["coil", "discrete_input", "input_register", "holding_register"]
TABLES: tuple[Table, ...] = ("coil", "discrete_input", "input_register", "holding_register")
BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete_input"})

# The protocol's own ceilings (Modbus Application Protocol 1.1b3, function codes 1-4).
PROTOCOL_MAX_REGISTERS = 125
PROTOCOL_MAX_BITS = 2000
ADDRESS_SPACE = 65536


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One point as the planner sees it: ``key`` is the caller's handle (e.g. its index)."""

    key: int
    table: str
    address: int
    width: int  # registers for register tables, 1 for bit tables
    poll_ms: int


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` units of ``table`` from ``start``; ``items`` are (key, offset)."""

    table: str
    start: int
    count: int
    items: tuple[tuple[int, int], ...]

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True, slots=True)
class PollGroup:
    """The blocks read together on one poll interval."""

    poll_ms: int
    blocks: tuple[Block, ...]


@dataclass(frozen=True, slots=True)
class Limits:
    max_registers: int = PROTOCOL_MAX_REGISTERS
    max_bits: int = PROTOCOL_MAX_BITS
    max_gap_registers: int = 8
    max_gap_bits: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.max_registers <= PROTOCOL_MAX_REGISTERS:
            raise ValueError(f"max_registers must be 1..{PROTOCOL_MAX_REGISTERS}")
        if not 1 <= self.max_bits <= PROTOCOL_MAX_BITS:
            raise ValueError(f"max_bits must be 1..{PROTOCOL_MAX_BITS}")
        if self.max_gap_registers < 0 or self.max_gap_bits < 0:
            raise ValueError("gaps must not be negative")

    def size_for(self, table: str) -> int:
        return self.max_bits if table in BIT_TABLES else self.max_registers

    def gap_for(self, table: str) -> int:
        return self.max_gap_bits if table in BIT_TABLES else self.max_gap_registers


def plan_table(items: Iterable[PlanItem], limits: Limits) -> list[Block]:
    """Blocks for points of ONE table (the caller groups by table and interval)."""
    ordered = sorted(items, key=lambda i: (i.address, -i.width, i.key))
    if not ordered:
        return []
    table = ordered[0].table
    size, gap = limits.size_for(table), limits.gap_for(table)
    blocks: list[Block] = []
    start = end = -1
    members: list[PlanItem] = []

    def close() -> None:
        if members:
            items = tuple((m.key, m.address - start) for m in members)
            blocks.append(Block(table, start, end - start, items))

    for it in ordered:
        if it.table != table:
            raise ValueError(f"plan_table got points of two tables: {table} and {it.table}")
        if it.width < 1 or it.width > size:
            raise ValueError(f"point {it.key}: {it.width} units never fit a request of at most {size}")
        if it.address < 0 or it.address + it.width > ADDRESS_SPACE:
            raise ValueError(f"point {it.key}: address {it.address} (+{it.width}) outside 0..65535")
        new_end = max(end, it.address + it.width)
        if members and it.address - end <= gap and new_end - start <= size:
            members.append(it)
            end = new_end
            continue
        close()
        start, end, members = it.address, it.address + it.width, [it]
    close()
    return blocks


def plan(items: Sequence[PlanItem], limits: Limits) -> list[PollGroup]:
    """Poll groups, fastest interval first; within a group, blocks by table then address."""
    by_key: dict[tuple[int, str], list[PlanItem]] = {}
    for it in items:
        if it.table not in TABLES:
            raise ValueError(f"point {it.key}: unknown table {it.table!r}")
        by_key.setdefault((it.poll_ms, it.table), []).append(it)
    groups: list[PollGroup] = []
    for poll_ms in sorted({k[0] for k in by_key}):
        blocks: list[Block] = []
        for table in TABLES:
            blocks.extend(plan_table(by_key.get((poll_ms, table), []), limits))
        groups.append(PollGroup(poll_ms, tuple(blocks)))
    return groups


def request_count(groups: Iterable[PollGroup]) -> int:
    """Requests one poll of every group costs (each group once)."""
    return sum(len(g.blocks) for g in groups)
