"""How a channel says a send did not work: retry later, or never (the dispatcher decides when)."""


class SendFailed(Exception):
    """The message was not handed over. ``permanent``: sending it again cannot help (a refused
    address, a channel not configured); otherwise it is retried with back-off."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def http_failure(channel: str, status: int, body: str) -> SendFailed:
    """An HTTP answer that is no success: 408, 429 and 5xx are worth retrying, any other is not."""
    retry = status in (408, 429) or status >= 500
    detail = " ".join(body.split())[:200]
    return SendFailed(f"{channel}: HTTP {status}" + (f": {detail}" if detail else ""), permanent=not retry)
