"""`gatehouse cloud notify` killed mid-send and started again: every notice reaches its receiver,
once each by its Message-ID / Idempotency-Key / delivery id, and nothing already marked sent
before the kill goes out again.

The SMTP server stalls on one email (a seeded choice) so the kill always lands with a send in
flight; how many other deliveries happen first is seeded too. GATEHOUSE_TEST_SEED replays a run.
"""

import asyncio
import logging
import os
import random
import re
import signal
import sys
from collections import Counter
from pathlib import Path

from cloud.alerts.models import LIFE_SAFETY, SENT
from cloud.db import create_engine, session_factory
from tests.cloud.notify_support import (
    BASE_URL,
    SMS_KEY_ID,
    SMS_SECRET,
    enqueue_for,
    http_server,
    make_alert,
    make_person,
    make_webhook,
    notifications,
    smtp_server,
)
from tests.cloud.tenancy import make_company
from tests.support.waits import until

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


def _config(path: Path, db_url: str, smtp_port: int, sms_url: str) -> Path:
    path.write_text(
        f"""
data_dir = "{path.parent / "data"}"

[database]
url = "{db_url}"

[notify]
base_url = "{BASE_URL}"
poll_s = 0.2
retry_min_s = 0.05
retry_max_s = 0.2
webhook_timeout_s = 2
lease_s = 2      # a notice of the killed dispatcher is taken again 2 s after its claim

[notify.smtp]
host = "127.0.0.1"
port = {smtp_port}
from_address = "alerts@gh.example.cn"
timeout_s = 2

[notify.sms]
url = "{sms_url}"
key_id = "{SMS_KEY_ID}"
secret = "{SMS_SECRET}"
timeout_s = 2
""",
        encoding="utf-8",
    )
    return path


async def _start(config: Path, output: Path) -> asyncio.subprocess.Process:
    out = output.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatehouse", "cloud", "notify", "--config", str(config),
            cwd=REPO, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        out.close()


async def test_killed_mid_send_and_restarted_sends_each_notice_once(sqlite_url: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("GATEHOUSE_TEST_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    log.warning("notify crash test seed: %d (GATEHOUSE_TEST_SEED=%d replays it)", seed, seed)
    print(f"seed={seed}")

    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    output = tmp_path / "notify.log"
    process: asyncio.subprocess.Process | None = None
    try:
        tenant = await make_company(sessions)
        people = [
            await make_person(sessions, tenant, language="zh"),
            await make_person(sessions, tenant, language="en"),
        ]
        async with smtp_server() as smtp, http_server("/sms") as provider, http_server("/hook") as receiver:
            await make_webhook(sessions, tenant, receiver.url, tracks=[LIFE_SAFETY])
            for i in range(4):
                alert = await make_alert(
                    sessions, tenant, track=LIFE_SAFETY, kind="smoke.alarm", source=f"T{i}/smoke", fault=""
                )
                await enqueue_for(sessions, alert, people)
            rows = await notifications(sessions)
            assert len(rows) == 20  # 4 alarms x (2 people x email and SMS + 1 webhook)
            emails = [r.id for r in rows if r.channel == "email"]
            stalled_id = rng.choice(emails)
            before_kill = rng.randint(1, 19)  # deliveries to wait for (besides the stalled one)
            stalled_mid = f"<gatehouse-notification-{stalled_id}@gh.example.cn>"
            smtp.stall_on = lambda msg: msg["Message-ID"] == stalled_mid

            def delivered() -> int:
                return len(smtp.snapshot()) + len(provider.snapshot()) + len(receiver.snapshot())

            config = _config(tmp_path / "cloud.toml", sqlite_url, smtp.port, provider.url)
            process = await _start(config, output)
            await until(smtp.stalled.is_set, f"the SMTP server stalling on {stalled_id} (seed {seed})", 30)
            await until(lambda: delivered() >= before_kill, f"{before_kill} deliveries (seed {seed})", 30)
            process.send_signal(signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL
            sent_before = {r.id for r in await notifications(sessions) if r.status == SENT}
            smtp.release.set()  # the stalled email is in; its sender never heard so

            process = await _start(config, output)

            async def all_sent() -> bool:
                return all(r.status == SENT for r in await notifications(sessions))

            await until(all_sent, f"every notice sent after the restart (seed {seed})", 30)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0, output.read_text(errors="replace")
            process = None

            received: Counter[int] = Counter()
            for msg in smtp.snapshot():
                match = re.fullmatch(
                    r"<gatehouse-notification-(\d+)@gh\.example\.cn>", str(msg["Message-ID"])
                )
                assert match, msg["Message-ID"]
                received[int(match.group(1))] += 1
            for req in provider.snapshot():
                received[int(req.headers["idempotency-key"].removeprefix("gatehouse-notification-"))] += 1
            for req in receiver.snapshot():
                received[int(req.headers["x-gatehouse-delivery"])] += 1

        ids = {r.id for r in rows}
        assert set(received) == ids, f"seed {seed}: missing {ids - set(received)}"
        assert stalled_id in received
        again = {i: n for i, n in received.items() if i in sent_before and n != 1}
        assert not again, f"seed {seed}: marked sent before the kill, yet sent again: {again}"
        # Whatever went out twice went out with the same key, so a receiver keeps it once.
        assert all(n <= 2 for n in received.values()), f"seed {seed}: {received}"
        assert {r.status for r in await notifications(sessions)} == {SENT}
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await engine.dispose()
