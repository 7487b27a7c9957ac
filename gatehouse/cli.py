"""``gatehouse``: dispatches to the CLI commands of edge, cloud and drivers.sim, plus ``demo``.

Each side registers its own subcommands through ``add_commands(subparsers)``; each subcommand
sets ``func(args) -> int``. Only the side a command names is imported: a gateway process must
not carry the cloud's web framework and ORM in its memory (a Raspberry Pi has little), and a
gateway install (no cloud extra) can still run ``gatehouse gateway ...``.
"""

import argparse
import importlib
import logging
import sys

SIDES = {
    "gateway": ("edge.cli", "run and inspect the on-site gateway"),
    "cloud": ("cloud.cli", "run and administer the cloud service"),
    "sim": ("drivers.sim.cli", "run device simulators"),
}

# Third-party modules that come with an install extra; a missing one means "install the extra".
EXTRA_MODULES = {
    "aiosqlite",
    "alembic",
    "amqtt",
    "asyncpg",
    "fastapi",
    "httpx",
    "jinja2",
    "paho",
    "prometheus_client",
    "sqlalchemy",
    "uvicorn",
}


def _requested_side(argv: list[str]) -> str | None:
    words = [a for a in argv if not a.startswith("-")]
    return words[0] if words and words[0] in SIDES else None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatehouse",
        description="Gatehouse: property-management platform with on-site gateways.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="run broker, cloud and a simulated building with a real gateway on this machine",
        description="Start an embedded MQTT broker, the cloud on SQLite under ./var and a real "
        "gateway process fed by simulators; print the console URL and API token; Ctrl-C stops all.",
    )
    from gatehouse import demo as demo_mod

    demo_mod.add_arguments(demo)
    demo.set_defaults(func=demo_mod.run)

    wanted = _requested_side(sys.argv[1:] if argv is None else argv)
    for name, (module, help_text) in SIDES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        side_sub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
        if name != wanted:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            if (e.name or "").split(".")[0] not in EXTRA_MODULES:
                raise  # a real bug, not a missing extra
            # This install lacks the extra for that side; say so instead of a traceback.
            p.set_defaults(func=lambda _a, e=e, name=name: _missing_extra(name, e))
            side_sub.required = False
            continue
        mod.add_commands(side_sub)
    return parser


def _missing_extra(side: str, err: ImportError) -> int:
    extra = {"gateway": "edge", "cloud": "cloud", "sim": "edge"}[side]
    print(
        f"gatehouse {side}: not available in this install ({err}); pip install 'gatehouse[{extra}]'",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
