"""Email over SMTP: the standard library's ``smtplib`` on a thread pool of its own.

A thread pool rather than an async client: smtplib is the best-trodden SMTP client there is, and
its pool is the channel's own, so a server that stalls ties up these threads only, never the
event loop or the SMS and webhook sends. Each message carries a Message-ID made from its
notification ids, the same on every attempt, so a receiver can drop the copy a retry after a
crash sends again.
"""

import asyncio
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from cloud.config import SmtpConfig
from cloud.notify.errors import SendFailed

NOT_CONFIGURED = "email: no SMTP server configured ([notify.smtp] host)"


def delivery_key(notification_ids: list[int]) -> str:
    """``gatehouse-notification-{id}[-{id}...]``: the same for the same notices on every attempt,
    so a receiver drops the copy a resend after a crash delivers (email Message-ID, SMS
    Idempotency-Key)."""
    return "gatehouse-notification-" + "-".join(str(i) for i in sorted(notification_ids))


def message_id(notification_ids: list[int], from_address: str) -> str:
    """``<gatehouse-notification-{id}[-{id}...]@{domain}>``: the same for the same notices."""
    domain = from_address.rpartition("@")[2] or "gatehouse.invalid"
    return f"<{delivery_key(notification_ids)}@{domain}>"


def build_message(
    config: SmtpConfig, to: str, subject: str, text: str, msg_id: str, sender_name: str = "Gatehouse"
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = formataddr((sender_name, config.from_address))
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = msg_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to an alarm
    msg.set_content(text)  # UTF-8, with the transfer encoding the text needs
    return msg


class SmtpSender:
    def __init__(self, config: SmtpConfig, max_workers: int = 8) -> None:
        self.config = config
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="smtp")

    @property
    def enabled(self) -> bool:
        return bool(self.config.host)

    async def send(self, to: str, subject: str, text: str, msg_id: str) -> str:
        """Hand the message to the SMTP server; returns its Message-ID. Raises SendFailed."""
        if not self.enabled:
            raise SendFailed(NOT_CONFIGURED, permanent=True)
        msg = build_message(self.config, to, subject, text, msg_id)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._deliver, msg)
        return msg_id

    def close(self) -> None:
        # A thread stuck on a dead server is not waited for: its row's lease brings it back.
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _deliver(self, msg: EmailMessage) -> None:
        c = self.config
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout_s) as smtp:
                smtp.ehlo()
                if c.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if c.username:
                    smtp.login(c.username, c.password)
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as e:
            codes = [code for code, _text in e.recipients.values()]
            permanent = all(500 <= code < 600 for code in codes)
            raise SendFailed(f"email: recipient refused: {_recipients(e)}", permanent=permanent) from None
        except smtplib.SMTPResponseException as e:
            # 5xx is the server's final word on this message (sender refused, too big, ...), except
            # authentication, which is our configuration and may be fixed before the last retry.
            permanent = 500 <= e.smtp_code < 600 and not isinstance(e, smtplib.SMTPAuthenticationError)
            raise SendFailed(f"email: {e.smtp_code} {_text(e.smtp_error)}", permanent=permanent) from None
        except (smtplib.SMTPException, OSError) as e:
            # Connection refused, reset, timed out, TLS failed: the server may be back later.
            raise SendFailed(f"email: {c.host}:{c.port}: {type(e).__name__}: {e}") from None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _recipients(e: smtplib.SMTPRecipientsRefused) -> str:
    return "; ".join(f"{addr}: {code} {_text(text)}" for addr, (code, text) in e.recipients.items())
