"""``gatehouse sim ...``: the simulated building and its devices, speaking their real protocols."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "list",
        help="list the simulators this install has",
        description="List the simulators this install has.",
    )
    p.set_defaults(func=_list)
    b = sub.add_parser(
        "building",
        help="run a whole simulated building (Modbus, BACnet, card readers) until Ctrl-C",
        description=(
            "Run a simulated building on loopback: Modbus TCP meters, chiller, pump and I/O modules, "
            "a BACnet/IP air handler with smoke detectors, a Wiegand and an OSDP card reader on "
            "pseudo-terminals. Writes the gateway config sections that read it, optionally runs a "
            "scenario file, and stops on Ctrl-C or SIGTERM."
        ),
    )
    b.add_argument(
        "--gateway-config-out",
        metavar="FILE",
        help="write the [[modbus]], [[bacnet]], [[readers]] and [[sensors]] sections here "
        "(default: print them)",
    )
    b.add_argument(
        "--scenario", metavar="FILE", help="a scenario TOML file to run (see drivers/sim/scenario.py)"
    )
    b.add_argument("--seed", type=int, default=1, help="seed of the building's everyday life (default 1)")
    b.add_argument("--quiet-life", action="store_true", help="no everyday life: only what the scenario does")
    b.set_defaults(func=_building)


def _list(args: argparse.Namespace) -> int:
    print(
        "building   a whole building on loopback (gatehouse sim building): Modbus TCP meters, chiller,\n"
        "           pump and I/O modules; a BACnet/IP air handler with smoke detectors and PIR;\n"
        "           a Wiegand converter and an OSDP reader on pseudo-terminals\n"
        "synthetic  synthetic events straight into a gateway's outbox, for load tests;\n"
        '           configure it as [[sources]] kind = "synthetic" in the gateway config'
    )
    return 0


def _building(args: argparse.Namespace) -> int:
    from drivers.sim.building import Building
    from drivers.sim.scenario import load_scenario, run_scenario
    from protocols.configuration import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s sim %(message)s", stream=sys.stderr)
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    text = ""
    if args.scenario:
        try:
            text = Path(args.scenario).read_text(encoding="utf-8")
        except OSError as e:
            print(f"{args.scenario}: cannot read: {e.strerror}", file=sys.stderr)
            return 2

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Building(seed=args.seed, life=not args.quiet_life) as b:
            scenario = None
            if args.scenario:
                try:
                    scenario = load_scenario(text, args.scenario, b)
                except ConfigError as e:
                    print(str(e), file=sys.stderr)
                    return 2
            config = b.gateway_config()
            if args.gateway_config_out:
                out = Path(args.gateway_config_out)
                tmp = out.with_suffix(".tmp")
                tmp.write_text(config, encoding="utf-8")
                os.replace(tmp, out)  # whoever waits for the file never reads half of it
            else:
                print(config, flush=True)
            print(
                json.dumps({"ready": True, "modbus": b.modbus.ports(), "bacnet": b.ahu.address}),
                file=sys.stderr,
                flush=True,
            )
            task = asyncio.create_task(run_scenario(b, scenario)) if scenario else None
            await stop.wait()
            if task:
                task.cancel()
        return 0

    return asyncio.run(main())
