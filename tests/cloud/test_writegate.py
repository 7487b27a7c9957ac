"""The write gate: one writer at a time, urgent writers (alarms) ahead of queued batches."""

import asyncio

import pytest

from cloud.kit.writegate import WriteGate


async def test_urgent_writer_goes_before_queued_normal_writers():
    gate = WriteGate()
    order: list[str] = []
    release = asyncio.Event()

    async def writer(name: str, urgent: bool, hold: asyncio.Event | None = None) -> None:
        async with gate.hold(urgent=urgent):
            order.append(name)
            if hold:
                await hold.wait()

    first = asyncio.create_task(writer("batch-1", False, release))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(writer(f"batch-{i}", False)) for i in (2, 3)]
    await asyncio.sleep(0)
    alarm = asyncio.create_task(writer("alarm", True))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *queued, alarm), 5)
    assert order == ["batch-1", "alarm", "batch-2", "batch-3"]


async def test_a_cancelled_waiter_does_not_wedge_the_gate():
    gate = WriteGate()
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.hold():
            await release.wait()

    h = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(gate.hold().__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await h
    async with asyncio.timeout(5), gate.hold(urgent=True):
        pass


async def test_disabled_gate_lets_writers_overlap():
    gate = WriteGate(enabled=False)
    inside = 0
    peak = 0

    async def writer() -> None:
        nonlocal inside, peak
        async with gate.hold():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(writer() for _ in range(5)))
    assert peak > 1
