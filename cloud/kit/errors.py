"""Domain errors. Each carries its HTTP status, so service code raises what went wrong in the
domain's words and the API turns it into a response without a translation table per endpoint."""

from typing import Any, ClassVar


class CloudError(Exception):
    """Base of the cloud's domain errors. ``str()`` is the message shown to the caller."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def payload(self) -> dict[str, Any]:
        """The JSON body of the API's answer; a subclass may add to ``detail`` and ``code``."""
        return {"detail": str(self), "code": self.code}


class InvalidInput(CloudError):
    status_code = 422
    code = "invalid_input"


class NotFound(CloudError):
    status_code = 404
    code = "not_found"


class Conflict(CloudError):
    status_code = 409
    code = "conflict"


class Unauthorized(CloudError):
    status_code = 401
    code = "unauthorized"


class Unavailable(CloudError):
    status_code = 503
    code = "unavailable"
