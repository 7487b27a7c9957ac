"""The MQTT broker side of the cloud.

- ``passwords``: Mosquitto ``$7$`` (PBKDF2-SHA512) password hashes, made and checked;
- ``acl``: who may publish, subscribe to and receive which ``gh/v1/...`` topic;
- ``authority``: ``RegistryAuthority``, sign-in and topic rights backed by the gateway registry;
- ``embedded``: ``EmbeddedBroker``, amqtt on a loopback port for ``gatehouse demo`` (imports amqtt,
  so it is not imported here);
- ``mosquitto``: the password and ACL files of a production Mosquitto, and its SIGHUP reload.
"""

from cloud.broker.authority import RegistryAuthority
from cloud.broker.passwords import hash_password, verify_password

__all__ = ["RegistryAuthority", "hash_password", "verify_password"]
