"""``gatehouse cloud company add`` and ``gatehouse cloud user add``: the platform operator's
bootstrap, before anyone can sign in to the console to do the rest.

    gatehouse cloud company add harbour "Harbour Property Management"
    gatehouse cloud user add --company harbour --username li.wei --role company_admin

The password is asked for twice on the terminal, or read from the first line of standard input
with ``--password-stdin`` (for scripts: it never appears in the process list or shell history).
Both act as the platform operator and are audited as such.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from pydantic import ValidationError
from sqlalchemy import select

from cloud.accounts import logins
from cloud.accounts.passwords import check_policy
from cloud.accounts.permissions import PLATFORM, Role
from cloud.accounts.schemas import RoleIn, UserIn
from cloud.accounts.users import create_user
from cloud.config import CloudConfig, load_cloud_config
from cloud.kit.errors import CloudError, InvalidInput, NotFound
from cloud.property.models import DEFAULT_TIMEZONE, Company, Site
from cloud.property.schemas import CompanyIn
from cloud.property.sites import create_company
from cloud.server import StartupFailed, open_database
from protocols.configuration import ConfigError


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    company = subparsers.add_parser(
        "company", help="register property companies", description="Register property companies."
    )
    company_sub = company.add_subparsers(dest="company_command", metavar="ACTION", required=True)
    p = company_sub.add_parser(
        "add",
        help="register a company (the cloud's tenant)",
        description="Register a property company under CODE (a short slug, unique in the cloud).",
    )
    p.add_argument("code", metavar="CODE", help="short slug, e.g. harbour")
    p.add_argument("name", metavar="NAME", help="the company's name")
    p.add_argument("--timezone", default=DEFAULT_TIMEZONE, help=f"IANA zone (default {DEFAULT_TIMEZONE})")
    _config_option(p)
    p.set_defaults(func=_company_add)

    user = subparsers.add_parser(
        "user", help="add staff accounts", description="Add staff accounts (the first administrator)."
    )
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = user_sub.add_parser(
        "add",
        help="add a staff account with a role and a password",
        description="Add a staff account to the company CODE with ROLE (for every site, or only the "
        "sites given with --site) and a password, asked for on the terminal or read from stdin.",
    )
    p.add_argument("--company", required=True, metavar="CODE", help="the company's code")
    p.add_argument("--username", required=True, help="the sign-in name")
    p.add_argument(
        "--role",
        required=True,
        action="append",
        choices=[r.value for r in Role],
        help="a role (repeatable)",
    )
    p.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="CODE",
        help="limit the roles to this site (repeatable)",
    )
    p.add_argument("--display-name", help="the name shown (default: the username)")
    p.add_argument("--email", default="", help="email address")
    p.add_argument("--language", choices=["zh", "en"], default="zh", help="console language (default zh)")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )
    _config_option(p)
    p.set_defaults(func=_user_add)


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="cloud config (TOML); default: built-in defaults")


def _run(
    args: argparse.Namespace, prog: str, work: Callable[[CloudConfig], Coroutine[Any, Any, None]]
) -> int:
    try:
        config = load_cloud_config(args.config)
        asyncio.run(work(config))
        return 0
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except InvalidInput as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (StartupFailed, CloudError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1


def _company_add(args: argparse.Namespace) -> int:
    prog = "gatehouse cloud company add"
    try:
        draft = CompanyIn(code=args.code, name=args.name, timezone=args.timezone)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        print(f"{prog}: {problems}", file=sys.stderr)
        return 2

    async def work(config: CloudConfig) -> None:
        async with open_database(config) as (_engine, sessions), sessions() as session, session.begin():
            company = await create_company(session, PLATFORM, draft)
        print(f"company {company.code} registered (id {company.id})")

    return _run(args, prog, work)


def _user_add(args: argparse.Namespace, stdin: TextIO | None = None) -> int:
    prog = "gatehouse cloud user add"
    try:
        username = logins.username(args.username, field="--username")
        password = _read_password(args.password_stdin, stdin or sys.stdin)
        check_policy(password, field="password", username=username)
    except InvalidInput as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2

    async def work(config: CloudConfig) -> None:
        async with open_database(config) as (_engine, sessions):
            async with sessions() as session:
                company = await session.scalar(select(Company).where(Company.code == args.company))
                if company is None:
                    raise NotFound(f"--company: no company has the code {args.company!r}")
                site_ids: list[int | None] = []
                for code in args.site:
                    site = await session.scalar(
                        select(Site).where(Site.code == code, Site.company_id == company.id)
                    )
                    if site is None:
                        raise NotFound(f"--site: company {company.code} has no site {code!r}")
                    site_ids.append(site.id)
            roles = [RoleIn(role=Role(r), site_id=s) for r in args.role for s in (site_ids or [None])]
            member = await create_user(
                sessions,
                PLATFORM,
                UserIn(
                    company_id=company.id,
                    username=username,
                    display_name=args.display_name or username,
                    email=args.email,
                    language=args.language,
                    password=password,
                    roles=roles,
                ),
            )
        granted = ", ".join(sorted({r.role.value for r in roles}))
        where = f"at {', '.join(args.site)}" if args.site else "at every site"
        print(f"user {member.user.username} added to {company.code} (id {member.user.id}): {granted} {where}")

    return _run(args, prog, work)


def _read_password(from_stdin: bool, stdin: TextIO) -> str:
    if from_stdin:
        line = stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise InvalidInput("--password-stdin: standard input gave no password")
        return password
    if not sys.stdin.isatty():
        raise InvalidInput("no terminal to ask for the password on: use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise InvalidInput("the two passwords differ")
    return first
