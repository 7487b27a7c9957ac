"""Gateways: registering them at a site, their credentials (issued, rotated, revoked, and the
broker told), and what the console shows of each (its state, devices, points, latest values).

- ``service``: the operations, with the permission checks and the audit log;
- ``endpoints``: ``/api/v1/gateways`` and ``/api/v1/gateways/{id}[/credentials]``;
- ``schemas``: their requests and answers;
- ``config_file``: the gateway's config file, as ``gateway add`` prints it and the API returns it.
"""
