"""The gateway's config file as the cloud hands it out with a new password: what
``gatehouse cloud gateway add`` prints and ``POST /api/v1/gateways`` returns."""

from datetime import UTC, datetime

import orjson


def gateway_config(
    gateway_id: str, site: str, mqtt_url: str, password: str, *, issued: str = "registered"
) -> str:
    """A ready gateway config (TOML) holding the gateway's broker password; ``issued`` says what
    made the password ("registered", "credentials rotated")."""
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    about = f" (site {_toml_string(site)})" if site else ""
    return (
        f"# Gatehouse gateway {gateway_id}{about}, {issued} {made}.\n"
        "# Holds the gateway's broker password: keep this file private (mode 0600).\n"
        f"gateway_id = {_toml_string(gateway_id)}\n"
        f"data_dir = {_toml_string('./var/gateway/' + gateway_id)}\n"
        "\n"
        "[mqtt]\n"
        f"url = {_toml_string(mqtt_url)}\n"
        f"password = {_toml_string(password)}\n"
        'ca_file = ""   # only meaningful with mqtts://\n'
    )


def _toml_string(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return orjson.dumps(value).decode()
