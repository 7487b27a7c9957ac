"""``gatehouse sim ...``: simulators. The field simulators (Modbus, BACnet, readers) come with the
drivers issue; today the synthetic building runs inside the gateway (``[[sources]]`` in its config)."""

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "list",
        help="list the simulators this install has",
        description="List the simulators this install has.",
    )
    p.set_defaults(func=_list)


def _list(args: argparse.Namespace) -> int:
    print(
        "synthetic  a synthetic building (meters, AHU and chiller points, doors, cards, smoke detectors);\n"
        '           configure it as [[sources]] kind = "synthetic" in the gateway config'
    )
    return 0
