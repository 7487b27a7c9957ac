"""A test site: the simulated building (Modbus TCP, BACnet/IP, readers on ptys) read by the real
drivers, sensors and local action of a gateway (edge/rehearsal.py), with no broker and no cloud.

The local action's events land in memory where the outbox would be; the lock relays are read off
the simulator, where a real relay's coil would be.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.sim.building import Building
from edge.access import CredentialStore
from edge.clock import Clock
from edge.config import GatewayConfig
from edge.rehearsal import LocalSite, local_site
from protocols.access import AccessDelta, AccessLevel, Credential
from tests.support.waits import until

# The building's cardholders, as the cloud would send them.
CREDENTIALS = [
    Credential(
        id="c-12345",
        card="12345",
        facility=1,
        holder="Zhang Wei",
        levels=["staff", "plant"],
        first_person_in=True,
    ),
    Credential(id="c-19876", card="19876", facility=1, holder="Li Na", levels=["staff"]),
    Credential(
        id="c-20001", card="20001", facility=1, holder="Wang Fang", levels=["staff", "plant"], offline_ok=True
    ),
]
LEVELS = [
    AccessLevel(id="staff", doors=["door-lobby-east", "door-carpark-1"]),
    AccessLevel(id="plant", doors=["door-plantroom"]),
]


def fast_doors(cfg: GatewayConfig, **door: Any) -> GatewayConfig:
    """The building's doors with test-sized times (strike, held open)."""
    times = {"strike_s": 0.6, "held_open_s": 1.5, "prealarm_s": 0.5, **door}
    return cfg.model_copy(update={"doors": [d.model_copy(update=times) for d in cfg.doors]})


@dataclass
class Site:
    building: Building
    rig: LocalSite

    @property
    def local(self) -> Any:
        return self.rig.local

    @property
    def events(self) -> Any:
        return self.rig.events

    def kinds(self, *kinds: str) -> list[Any]:
        return [e for e in self.rig.events.events if e.kind in kinds]

    def released(self, door: str) -> bool:
        return self.building.lock_released(door)

    async def wait_kind(self, kind: str, n: int = 1, within: float = 10.0, **data: Any) -> list[Any]:
        def match() -> list[Any]:
            found = [
                e for e in self.rig.events.of_kind(kind) if all(e.data.get(k) == v for k, v in data.items())
            ]
            return found if len(found) >= n else []

        return list(await until(match, what=f"{n} x {kind} {data}", within=within))

    async def settled(self) -> None:
        await self.rig.settled()


async def credential_store(path: Path) -> CredentialStore:
    store = CredentialStore.open(path)
    delta = AccessDelta(base=0, version=1, reset=True, levels=LEVELS, credentials=CREDENTIALS)
    await store.apply(delta, now_ms=Clock.now_ms())
    return store


@contextlib.asynccontextmanager
async def running_site(
    tmp_path: Path,
    *,
    configure: Any = None,
    clock: Clock | None = None,
    building: Building | None = None,
) -> AsyncIterator[Site]:
    own_building = building is None
    b = building or Building(seed=3, life=False)
    if own_building:
        await b.start()
    store = await credential_store(tmp_path / "access.sqlite3")
    try:
        async with local_site(b, store, tmp_path, configure=configure, clock=clock) as rig:
            yield Site(b, rig)
    finally:
        store.close()
        if own_building:
            await b.stop()
