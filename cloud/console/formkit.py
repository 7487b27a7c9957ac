"""What the console's admin forms share (property, people, users and roles, gateways): a page
rendered with its form's mistake and what was typed, the redirect after a change with its flash
message, and a form's mistake in words.

A form posts to a route that calls the module's service. A mistake in what was typed (a pydantic
``ValidationError`` from the service's input model, ``InvalidInput``, a ``Conflict`` such as a
duplicate code) shows the form again with the message (``FORM_MISTAKES``); anything else (NotFound,
Forbidden) propagates and becomes the error page (``page_router``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from cloud.accounts.permissions import Principal
from cloud.console.flash import flash
from cloud.console.i18n import language_of, translate
from cloud.console.templating import render
from cloud.kit.errors import CloudError, Conflict, InvalidInput

# Shown again on the form; every other error is the error page.
FORM_MISTAKES = (ValidationError, InvalidInput, Conflict)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


@dataclass(frozen=True)
class Mistake:
    """A form shown again: what was wrong, what was typed, which of the page's forms it was, and
    the status to answer with."""

    error: str = ""
    form: Mapping[str, str] = field(default_factory=dict)
    form_name: str = ""
    status_code: int = 200

    @classmethod
    def of(cls, e: ValidationError | CloudError, form: Mapping[str, str], form_name: str = "") -> Mistake:
        message, status = problem(e)
        return cls(message, form, form_name, status)


NO_MISTAKE = Mistake()


def render_form(
    request: Request,
    principal: Principal,
    template: str,
    context: Mapping[str, Any],
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    """``render`` with the template's ``error`` (the form's mistake, "" for none), ``form`` (what
    was typed) and ``form_name`` (which form) always defined."""
    full = {**context, "error": mistake.error, "form": mistake.form, "form_name": mistake.form_name}
    return render(request, template, full, principal=principal, status_code=mistake.status_code)


def done(request: Request, principal: Principal, url: str, message: str, **values: Any) -> Response:
    """Redirect (303) after a change, with ``message`` (an English msgid, ``%(name)s`` filled from
    ``values``) shown on the next page in the user's language."""
    response = RedirectResponse(url, 303)
    text = translate(language_of(request, principal), message)
    flash(response, request, text % values if values else text)
    return response


def problem(e: ValidationError | CloudError) -> tuple[str, int]:
    """What was wrong with a form (naming the field), and the status to answer it with."""
    if isinstance(e, CloudError):
        return str(e), e.status_code
    parts = []
    for error in e.errors(include_url=False):
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts), 422


def optional(value: str) -> str | None:
    """A form's text field: None when left empty."""
    value = value.strip()
    return value or None


def parse_date(value: str, field: str, *, required: bool = True) -> date | None:
    """A date input's value (``2024-03-01``); None for an empty optional one."""
    text = value.strip()
    if not text:
        if required:
            raise InvalidInput(f"{field}: a date is needed (2024-03-01)")
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{field}: {text!r} is not a date like 2024-03-01") from None
