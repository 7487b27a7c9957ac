"""``gatehouse cloud audit verify [--company CODE]``: check the audit log's hash chains.

Exit status: 0 every chain checked is intact, 1 a problem was found (each listed on stdout) or the
check could not run (the reason on stderr), 2 unusable config or arguments (an unknown company).
"""

import argparse
import asyncio
import sys

from sqlalchemy import select

from cloud.audit.chain import PLATFORM_CHAIN, Verification, verify
from cloud.config import CloudConfig, load_cloud_config
from cloud.kit.errors import CloudError
from cloud.property.models import Company
from cloud.server import StartupFailed, open_database
from protocols.configuration import ConfigError

PLATFORM_CODE = "platform"  # --company platform: the platform's own chain (company 0)


def add_audit_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    audit = subparsers.add_parser(
        "audit", help="check the audit log", description="Check the audit log's hash chains."
    )
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = audit_sub.add_parser(
        "verify",
        help="verify the audit log's hash chains",
        description="Walk each company's audit chain (or one company's) and report every entry changed "
        "after it was written, every gap and a removed tail. Exit status 0 when intact, 1 listing each "
        "problem, 2 for an unknown company.",
    )
    p.add_argument(
        "--company",
        metavar="CODE",
        help=f"only this company's chain (its code; {PLATFORM_CODE!r}: the platform's own)",
    )
    p.add_argument("--config", metavar="FILE", help="cloud config (TOML); default: built-in defaults")
    p.set_defaults(func=_verify)


class UnknownCompany(Exception):
    pass


async def _run_verify(config: CloudConfig, company: str | None) -> tuple[Verification, dict[int, str]]:
    async with open_database(config) as (_engine, sessions), sessions() as session:
        codes = {c.id: c.code for c in (await session.scalars(select(Company))).all()}
        codes[PLATFORM_CHAIN] = PLATFORM_CODE
        chain: int | None = None
        if company is not None:
            chain = next((i for i, code in codes.items() if code == company), None)
            if chain is None:
                raise UnknownCompany(company)
        return await verify(session, chain), codes


def _verify(args: argparse.Namespace) -> int:
    try:
        config = load_cloud_config(args.config)
        result, codes = asyncio.run(_run_verify(config, args.company))
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except UnknownCompany as e:
        print(f"gatehouse cloud audit verify: --company: no company {str(e)!r}", file=sys.stderr)
        return 2
    except (StartupFailed, CloudError) as e:
        print(f"gatehouse cloud: {e}", file=sys.stderr)
        return 1
    if result.ok:
        print(f"audit log intact: {result.entries} entries in {result.chains} chain(s)")
        return 0
    for p in result.problems:
        where = f"entry {p.seq}" if p.seq is not None else "chain"
        print(f"company {codes.get(p.company_id, p.company_id)} (id {p.company_id}), {where}: {p.reason}")
    print(f"audit log BROKEN: {len(result.problems)} problem(s) in {result.entries} entries checked")
    return 1
