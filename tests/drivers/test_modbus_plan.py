"""The Modbus block planner: pure, so tested on its own, including a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus import ModbusDeviceConfig
from drivers.modbus_plan import Limits, PlanItem, plan, plan_table, request_count
from drivers.sim.modbus_server import bench_points


def regs(*addrs: int, width: int = 1, table: str = "holding_register", poll_ms: int = 1000) -> list[PlanItem]:
    return [PlanItem(i, table, a, width, poll_ms) for i, a in enumerate(addrs)]


def spans(blocks: list) -> list[tuple[int, int]]:
    return [(b.start, b.count) for b in blocks]


def test_adjacent_points_are_one_request() -> None:
    assert spans(plan_table(regs(0, 1, 2, 3), Limits())) == [(0, 4)]


def test_small_gaps_are_bridged_large_ones_split() -> None:
    limits = Limits(max_gap_registers=3)
    # 0 and 4: 3 unused registers between them (1..3) -> bridged; 4 and 9: 4 unused -> split
    assert spans(plan_table(regs(0, 4, 9), limits)) == [(0, 5), (9, 1)]
    assert spans(plan_table(regs(0, 4, 9), Limits(max_gap_registers=0))) == [(0, 1), (4, 1), (9, 1)]


def test_never_over_the_protocol_limit() -> None:
    blocks = plan_table(regs(*range(300)), Limits())
    assert spans(blocks) == [(0, 125), (125, 125), (250, 50)]


def test_never_over_a_device_limit() -> None:
    blocks = plan_table(regs(*range(30)), Limits(max_registers=10))
    assert [b.count for b in blocks] == [10, 10, 10]


def test_a_32_bit_point_is_never_split_across_requests() -> None:
    # 62 float32 = 124 registers, then one more float32 would make 126: it starts a new block.
    items = regs(*range(0, 126, 2), width=2)
    blocks = plan_table(items, Limits())
    assert spans(blocks) == [(0, 124), (124, 2)]
    assert all(off + 2 <= b.count for b in blocks for _, off in b.items)


def test_bits_go_up_to_2000() -> None:
    blocks = plan_table(regs(*range(4500), table="coil"), Limits())
    assert spans(blocks) == [(0, 2000), (2000, 2000), (4000, 500)]


def test_tables_and_intervals_are_never_merged() -> None:
    items = [
        PlanItem(0, "holding_register", 0, 1, 1000),
        PlanItem(1, "input_register", 1, 1, 1000),
        PlanItem(2, "holding_register", 1, 1, 100),
        PlanItem(3, "holding_register", 2, 1, 1000),
    ]
    groups = plan(items, Limits())
    assert [g.poll_ms for g in groups] == [100, 1000]
    fast, slow = groups
    assert [(b.table, b.start, b.count) for b in fast.blocks] == [("holding_register", 1, 1)]
    assert [(b.table, b.start, b.count) for b in slow.blocks] == [
        ("input_register", 1, 1),
        ("holding_register", 0, 3),
    ]


def test_overlapping_points_share_a_request() -> None:
    # The same registers read as a uint32 and as its low word: one request, two offsets.
    items = [PlanItem(0, "holding_register", 10, 2, 1000), PlanItem(1, "holding_register", 11, 1, 1000)]
    (block,) = plan_table(items, Limits())
    assert (block.start, block.count, sorted(block.items)) == (10, 2, [(0, 0), (1, 1)])


def test_a_point_wider_than_the_device_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="never fit"):
        plan_table(regs(0, width=2), Limits(max_registers=1))


def test_per_point_map_needs_under_a_tenth_of_the_requests() -> None:
    """The benchmark's map: 100 points listed one by one (no ranges), four tables, gaps."""
    cfg = ModbusDeviceConfig.model_validate(
        {
            "name": "d",
            "host": "127.0.0.1",
            "points": [
                {
                    "name": p.name,
                    "table": p.table,
                    "address": p.address,
                    "type": p.type,
                    "word_order": p.word_order,
                    "byte_order": p.byte_order,
                }
                for p in bench_points(100)
            ],
        }
    )
    assert request_count(cfg.plan()) / len(cfg.points) <= 0.1


@st.composite
def point_sets(draw: st.DrawFn) -> tuple[list[PlanItem], Limits]:
    limits = Limits(
        max_registers=draw(st.integers(2, 125)),
        max_bits=draw(st.integers(1, 2000)),
        max_gap_registers=draw(st.integers(0, 20)),
        max_gap_bits=draw(st.integers(0, 100)),
    )
    n = draw(st.integers(0, 60))
    items = []
    for i in range(n):
        table = draw(st.sampled_from(["coil", "discrete_input", "input_register", "holding_register"]))
        width = 1 if table in {"coil", "discrete_input"} else draw(st.sampled_from([1, 2]))
        items.append(PlanItem(i, table, draw(st.integers(0, 400)), width, draw(st.sampled_from([100, 1000]))))
    return items, limits


@settings(max_examples=300, deadline=None)
@given(point_sets())
def test_every_point_is_read_once_within_the_limits(case: tuple[list[PlanItem], Limits]) -> None:
    items, limits = case
    groups = plan(items, limits)
    seen: dict[int, int] = {}
    by_key = {it.key: it for it in items}
    for g in groups:
        for b in g.blocks:
            assert 1 <= b.count <= limits.size_for(b.table)
            covered = []
            for key, off in b.items:
                it = by_key[key]
                assert (it.table, it.poll_ms) == (b.table, g.poll_ms)
                assert b.start + off == it.address and off + it.width <= b.count
                seen[key] = seen.get(key, 0) + 1
                covered.append((off, off + it.width))
            # no stretch inside a block wider than the allowed gap goes unused
            covered.sort()
            reach = covered[0][1]
            for lo, hi in covered[1:]:
                assert lo - reach <= limits.gap_for(b.table)
                reach = max(reach, hi)
    assert seen == {it.key: 1 for it in items}
