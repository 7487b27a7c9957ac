import atexit
from collections.abc import Iterator

import pytest

from tests.system.harness import BuildingThread, Proc

atexit.register(Proc.kill_all)


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Whatever a test started (cloud, gateways), it is gone when the test ends, passed or failed."""
    yield
    Proc.kill_all()


@pytest.fixture
def building() -> Iterator[BuildingThread]:
    """The simulated building on a loop of its own (a thread), started, and stopped afterwards."""
    b = BuildingThread()
    try:
        yield b
    finally:
        b.close()
