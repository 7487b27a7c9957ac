import atexit
from collections.abc import Iterator

import pytest

from tests.system.harness import Proc

atexit.register(Proc.kill_all)


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Whatever a test started (cloud, gateways), it is gone when the test ends, passed or failed."""
    yield
    Proc.kill_all()
