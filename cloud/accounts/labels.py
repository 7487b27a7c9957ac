"""What the console calls roles and permissions: English msgids marked for extraction here,
translated when a page is rendered."""

from __future__ import annotations

from collections.abc import Mapping

from cloud.accounts.permissions import Permission, Role
from cloud.console.i18n import N_, translate

ROLE_LABELS: Mapping[Role, str] = {
    Role.COMPANY_ADMIN: N_("Company administrator"),
    Role.PROPERTY_MANAGER: N_("Property manager"),
    Role.FINANCE: N_("Finance"),
    Role.SERVICE_AGENT: N_("Service agent"),
    Role.TECHNICIAN: N_("Technician"),
    Role.SECURITY_GUARD: N_("Security guard"),
}

PERMISSION_LABELS: Mapping[Permission, str] = {
    Permission.SITES_READ: N_("See the property model"),
    Permission.PROPERTY_WRITE: N_("Change and import the property model"),
    Permission.PEOPLE_READ: N_("See owners, tenants and residents"),
    Permission.PEOPLE_WRITE: N_("Change owners, tenants and residents"),
    Permission.GATEWAYS_READ: N_("See gateways, devices and points"),
    Permission.GATEWAYS_MANAGE: N_("Register gateways, rotate and revoke their credentials"),
    Permission.GATEWAYS_COMMAND: N_("Send commands to gateways"),
    Permission.EVENTS_READ: N_("See events and latest values"),
    Permission.DOORS_CONTROL: N_("Unlock doors and set door modes"),
    Permission.ACCESS_READ: N_("See access credentials and schedules"),
    Permission.ACCESS_WRITE: N_("Change access credentials and schedules"),
    Permission.USERS_READ: N_("See staff, departments and roles"),
    Permission.USERS_MANAGE: N_("Manage staff, roles and residents' accounts"),
    Permission.TOKENS_MANAGE: N_("Manage API tokens"),
    Permission.AUDIT_READ: N_("Read the audit log"),
    Permission.ALARMS_ACKNOWLEDGE: N_("Acknowledge alarms"),
    Permission.LIFESAFETY_ACKNOWLEDGE: N_("Acknowledge life-safety alarms"),
    Permission.ALERTS_MANAGE: N_("Manage on-call rotas, escalation, webhooks and silences"),
    Permission.EQUIPMENT_READ: N_("See equipment"),
    Permission.EQUIPMENT_WRITE: N_("Change equipment"),
    Permission.SERVICEDESK_READ: N_("See service requests"),
    Permission.SERVICEDESK_WRITE: N_("Handle service requests"),
    Permission.FINANCE_READ: N_("See fees and payments"),
    Permission.FINANCE_WRITE: N_("Change fees and payments"),
    Permission.CONTRACTS_READ: N_("See contracts"),
    Permission.CONTRACTS_WRITE: N_("Change contracts"),
}


def role_labels(lang: str) -> dict[str, str]:
    """Each role's value (as stored) and its name in ``lang``."""
    return {role.value: translate(lang, label) for role, label in ROLE_LABELS.items()}


def permission_labels(lang: str) -> dict[str, str]:
    return {p.value: translate(lang, label) for p, label in PERMISSION_LABELS.items()}
