"""What an installer meets: unit files that systemd accepts, example configs that pass their own
check, help on every command, and a gateway install that brings no web framework or ORM."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge.config import GatewayConfig
from protocols.configuration import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent.parent
GATEHOUSE = [sys.executable, "-m", "gatehouse"]


@pytest.mark.parametrize("unit", ["gatehouse-gateway.service", "gatehouse-cloud.service"])
def test_systemd_units_verify_cleanly(unit, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze missing: scripts/setup.sh --test installs package systemd")
    exe = shutil.which("gatehouse") or str(Path(sys.executable).parent / "gatehouse")
    text = (ROOT / "systemd" / unit).read_text().replace("/opt/gatehouse/venv/bin/gatehouse", exe)
    (tmp_path / unit).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True)
    # An unknown key only warns and exits 0: any output on stderr is a failure.
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_gateway_example_config_passes_its_own_check():
    cfg = parse_config(
        (ROOT / "config/gateway.example.toml").read_text(), GatewayConfig, "gateway.example.toml"
    )
    assert cfg.mqtt.tls and cfg.outbox.max_bytes == 256 * 1024 * 1024


def test_config_error_names_file_key_and_problem_and_exits_2(tmp_path):
    bad = tmp_path / "gw.toml"
    bad.write_text('gateway_id = "gw-1"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n[uplink]\nwindwo = 3\n')
    r = subprocess.run([*GATEHOUSE, "gateway", "check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"{bad}: uplink.windwo: unknown key (misspelt?)"
    bad.write_text('gateway_id = "gw-1"\n[mqtt]\nurl = "http://x"\n')
    r = subprocess.run([*GATEHOUSE, "gateway", "check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "mqtt.url" in r.stderr and "mqtt://host:port" in r.stderr
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("a = ", GatewayConfig, "x.toml")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["demo"],
        ["gateway"],
        ["gateway", "run"],
        ["gateway", "status"],
        ["gateway", "check-config"],
        ["cloud"],
        ["cloud", "serve"],
        ["cloud", "ingest"],
        ["cloud", "migrate"],
        ["cloud", "gateway", "add"],
        ["sim", "building"],
        ["sim", "list"],
    ],
)
def test_every_command_has_help(argv):
    r = subprocess.run([*GATEHOUSE, *argv, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr


@pytest.mark.parametrize(
    ("section", "where"),
    [
        (
            '[[modbus]]\nname = "m1"\nhost = "10.0.0.1"\n[[modbus.points]]\nname = "p"\n'
            'table = "holding_register"\naddress = 0\ntype = "float64"\n',
            "modbus.0.points.0.type",
        ),
        (
            '[[modbus]]\nname = "m1"\nhost = "10.0.0.1"\n[[modbus.points]]\nname = "s"\n'
            'table = "coil"\naddress = 0\nfire_system = true\nwritable = true\n',
            "never writable",
        ),
        (
            '[[bacnet]]\nname = "ahu"\naddress = "10.0.0.2"\ndevice_instance = 1\n[[bacnet.objects]]\n'
            'name = "t"\ntype = "analog-input"\ninstance = 1\ncov_lifetme_s = 3\n',
            "bacnet.0.objects.0.cov_lifetme_s: unknown key",
        ),
        (
            '[[readers]]\nname = "r"\nport = "/dev/ttyS0"\nprotocol = "osdp"\naddress = 1\nscbk = "xyz"\n',
            "readers.0",
        ),
        (
            '[[sensors]]\nname = "smoke-1"\nmeaning = "smoke"\npoint = "io-9/smoke_1"\n',
            "no configured device has the point 'io-9/smoke_1'",
        ),
    ],
)
def test_driver_config_errors_name_the_key(tmp_path, section, where):
    bad = tmp_path / "gw.toml"
    bad.write_text('gateway_id = "gw-1"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n' + section)
    r = subprocess.run([*GATEHOUSE, "gateway", "check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2, r.stdout
    assert r.stderr.startswith(f"{bad}: ") and where in r.stderr and "\n" not in r.stderr.strip()


def test_a_gateway_without_field_devices_loads_no_driver_library():
    code = (
        "import sys, edge.gateway, edge.cli, edge.config, edge.fieldbus\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'pymodbus', 'bacpypes3', 'osdp', 'serial'}]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_edge_extra_brings_no_web_framework_or_orm():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    edge = " ".join(meta["dependencies"] + meta["optional-dependencies"]["edge"]).lower()
    for heavy in ("fastapi", "sqlalchemy", "uvicorn", "alembic", "asyncpg", "amqtt", "jinja2"):
        assert heavy not in edge


def test_edge_never_imports_cloud_and_cloud_never_imports_edge():
    code = (
        "import sys, edge.gateway, edge.cli, edge.status, drivers.sim.synthetic\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'cloud', 'fastapi', 'sqlalchemy', 'uvicorn'}]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for path in (ROOT / "cloud").rglob("*.py"):
        text = path.read_text()
        assert "from edge" not in text and "import edge" not in text and "from drivers" not in text, path
