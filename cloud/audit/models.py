"""The audit log's tables. One hash chain per company (``company_id`` 0: the platform's own
actions, such as registering a company or a gateway without one): entries of different companies
never wait on each other's chain head, and a company's log can be verified (and handed to its
auditor) on its own."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, BigId, JsonDoc


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(BigInteger)  # 0: the platform
    seq: Mapped[int] = mapped_column(BigInteger)  # 1, 2, 3... within the company's chain
    at: Mapped[datetime]
    actor: Mapped[str]  # "user:12", "token:3", "resident:5", "platform", "system:ingest"
    actor_name: Mapped[str]  # as the actor was called then (a user may be renamed later)
    action: Mapped[str]  # e.g. "access.credential.update", "door.unlock", "user.role.grant"
    target_type: Mapped[str]
    target_id: Mapped[str]
    site_id: Mapped[int | None] = mapped_column(BigInteger)
    before: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    after: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    ip: Mapped[str] = mapped_column(default="")
    prev_hash: Mapped[str]  # the hash of the entry before in this chain ("0"*64 for the first)
    hash: Mapped[str]  # sha256 over prev_hash and this entry's canonical JSON

    __table_args__ = (
        Index("audit_log_chain", "company_id", "seq", unique=True),
        Index("audit_log_target", "company_id", "target_type", "target_id"),
    )


class AuditHead(Base):
    """The last entry of each chain. Appending locks this row, so entries are chained one at a
    time; comparing it with the log finds a truncated tail."""

    __tablename__ = "audit_heads"

    company_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str]
