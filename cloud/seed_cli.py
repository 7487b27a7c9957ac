"""``gatehouse cloud seed-demo``: fill the database with the demo's property company (see
``cloud.seed.seed_demo``) and print who can sign in. ``gatehouse demo`` runs it; it is safe to run
again (it adds only what is missing)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from cloud.config import load_cloud_config
from cloud.kit.errors import CloudError
from cloud.seed import seed_demo
from cloud.server import StartupFailed, open_database
from protocols.configuration import ConfigError


def add_seed_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "seed-demo",
        help="add the demo property company, its estate and staff (idempotent)",
        description="Upgrade the database, then add 海港物业 (Harbour Property) with its estate "
        "海景花园, towers, flats, residents, parking, meters and one member of staff per role, each "
        "with a demo password; print the sign-ins. What exists is left alone. For demos and "
        "rehearsals only: the passwords are printed and well known.",
    )
    p.add_argument("--config", metavar="FILE", help="cloud config file (TOML); default: built-in defaults")
    p.add_argument("--gateway", default="hv-tower-gw1", help="a registered gateway to place at the estate")
    p.add_argument("--url", default="", help="the console's URL, for the printed sign-in line")
    p.add_argument(
        "--webhook-url", default="", help="a webhook receiver for the company's alerts (the demo's inbox)"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_seed_demo)


def _seed_demo(args: argparse.Namespace) -> int:
    try:
        config = load_cloud_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2

    async def work() -> int:
        async with open_database(config) as (_engine, sessions):
            seeded = await seed_demo(sessions, gateway_id=args.gateway, webhook_url=args.webhook_url)
        if args.json:
            print(
                json.dumps(
                    {
                        "company_id": seeded.company_id,
                        "site_id": seeded.site_id,
                        "site_code": seeded.site_code,
                        "created": seeded.created,
                        "accounts": [a.__dict__ for a in seeded.accounts],
                    },
                    ensure_ascii=False,
                )
            )
        else:
            for line in seeded.lines(args.url):
                print(line)
        return 0

    try:
        return asyncio.run(work())
    except (StartupFailed, CloudError) as e:
        print(f"gatehouse cloud seed-demo: {e}", file=sys.stderr)
        return 1
