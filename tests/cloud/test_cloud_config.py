import stat
from pathlib import Path

import pytest

from cloud.config import (
    CloudConfig,
    api_token,
    broker_address,
    database_url,
    load_cloud_config,
    mqtt_password,
    parse_broker_url,
)
from protocols.configuration import ConfigError


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEHOUSE_DATA_DIR", raising=False)
    monkeypatch.delenv("GATEHOUSE_DATABASE_URL", raising=False)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cloud.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_no_file_means_every_default() -> None:
    config = load_cloud_config(None)
    assert config == CloudConfig()
    assert config.api.port == 8080
    assert config.mqtt.embedded_port == 18830
    assert config.ingest.max_batch_events == 0
    assert config.access.confirm_every_s == 3600


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir = "/srv/gatehouse"
[api]
port = 9090
[mqtt]
url = "mqtts://broker.example.com:8883"
share_group = "ingest"
[ingest]
max_batch_events = 100
[access]
confirm_every_s = 600
""",
    )
    config = load_cloud_config(path)
    assert config.data_dir == "/srv/gatehouse"
    assert config.api.port == 9090
    assert config.mqtt.share_group == "ingest"
    assert config.ingest.max_batch_events == 100
    assert config.access.confirm_every_s == 600
    address = broker_address(config)
    assert (address.host, address.port, address.tls) == ("broker.example.com", 8883, True)


def test_misspelt_key_is_one_line_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[api]\nprot = 9090\n")
    with pytest.raises(ConfigError) as e:
        load_cloud_config(path)
    assert str(e.value) == f"{path}: api.prot: unknown key (misspelt?)"


@pytest.mark.parametrize("value", ["59", "86401", "0"])
def test_confirmation_period_has_bounds(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"[access]\nconfirm_every_s = {value}\n")
    with pytest.raises(ConfigError, match=r"access\.confirm_every_s: "):
        load_cloud_config(path)


def test_example_config_is_valid() -> None:
    config = load_cloud_config(str(Path(__file__).parents[2] / "config" / "cloud.example.toml"))
    assert config.access.confirm_every_s == 3600


def test_bad_broker_url_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nurl = "http://broker:1883"\n')
    with pytest.raises(ConfigError, match=r"mqtt\.url: .*expected mqtt://host:port"):
        load_cloud_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_cloud_config(str(tmp_path / "nope.toml"))


def test_env_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[database]\nurl = "postgresql://db/one"\n')
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", "postgresql://db/two")
    monkeypatch.setenv("GATEHOUSE_DATA_DIR", str(tmp_path / "data"))
    config = load_cloud_config(path)
    assert database_url(config) == "postgresql+asyncpg://db/two"
    assert config.data_dir == str(tmp_path / "data")


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    config = CloudConfig(data_dir=str(tmp_path / "var"))
    assert database_url(config) == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'gatehouse.db'}"
    assert (tmp_path / "var").is_dir()


def test_unsupported_database_is_refused() -> None:
    config = CloudConfig.model_validate({"database": {"url": "mysql://db/x"}})
    with pytest.raises(ConfigError, match=r"database\.url"):
        database_url(config)


@pytest.mark.parametrize(("helper", "filename"), [(api_token, "api-token"), (mqtt_password, "mqtt-password")])
def test_secret_is_made_once_and_kept_private(tmp_path: Path, helper: object, filename: str) -> None:
    config = CloudConfig(data_dir=str(tmp_path))
    first = helper(config)  # type: ignore[operator]
    assert len(first) >= 32
    assert helper(config) == first  # type: ignore[operator]
    kept = tmp_path / filename
    assert kept.read_text().strip() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_configured_secret_wins(tmp_path: Path) -> None:
    config = CloudConfig.model_validate({"data_dir": str(tmp_path), "api": {"token": "t0ken"}})
    assert api_token(config) == "t0ken"
    assert not (tmp_path / "api-token").exists()


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "api-token").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        api_token(CloudConfig(data_dir=str(tmp_path)))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://localhost", ("localhost", 1883, False)),
        ("mqtt://127.0.0.1:18830", ("127.0.0.1", 18830, False)),
        ("mqtts://b.example.com", ("b.example.com", 8883, True)),
    ],
)
def test_broker_urls(url: str, expected: tuple[str, int, bool]) -> None:
    a = parse_broker_url(url)
    assert (a.host, a.port, a.tls) == expected


@pytest.mark.parametrize("url", ["tcp://h:1", "mqtt://", "mqtt://h:99999", "mqtt://u:p@h:1", "mqtt://h/x"])
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_broker_url(url)
