"""The console's escalation policies: the list (the sites' and the company's defaults, and what
applies where there is none), and a policy's form with its steps as rows.

Each row is one step: after how many minutes, and whom it tells: whoever is on call, the rota's
team lead (of the alert's skill, or the row's), everyone with some roles, some people. Empty rows
are left out, so the rows are numbered as the steps are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import Response

from cloud.accounts.labels import role_labels
from cloud.accounts.permissions import Authorize, Forbidden, Permission, Principal
from cloud.alerts.models import EscalationPolicy
from cloud.console import visibility
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, render_form
from cloud.console.i18n import N_, language_of
from cloud.console.templating import page_router
from cloud.kit.errors import CloudError, InvalidInput
from cloud.kit.web import SessionDep
from cloud.oncall import recipients, service
from cloud.oncall.labels import labels
from cloud.oncall.schemas import MAX_STEPS, ROLES, SKILLS, TRACKS, PolicyIn, PolicyPatch

P = Permission
router = page_router()
# A company-wide one asked for by someone who manages only some sites: said on the form.
CREATE_MISTAKES = (*FORM_MISTAKES, Forbidden)

Read = Annotated[Principal, Depends(Authorize(P.ALARMS_ACKNOWLEDGE))]
Manage = Annotated[Principal, Depends(Authorize(P.ALERTS_MANAGE))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
SPARE_ROWS = 2
MAX_FIELD = 200


@dataclass
class StepRow:
    """One step as the form shows it."""

    after_min: str = ""
    oncall: bool = False
    lead: bool = False
    skill: str = ""
    roles: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)

    @property
    def blank(self) -> bool:
        return not (self.after_min.strip() or self.oncall or self.lead or self.roles or self.users)


def _minutes(seconds: int) -> str:
    value = Decimal(seconds) / 60
    return str(value.quantize(Decimal(1))) if value == value.to_integral() else f"{value.normalize()}"


def rows_of_steps(steps: Sequence[Mapping[str, Any]]) -> list[StepRow]:
    rows = []
    for step in steps:
        row = StepRow(after_min=_minutes(int(step.get("after_s", 0))))
        for target in step.get("targets", []):
            kind = target.get("type")
            if kind in ("oncall", "lead"):
                setattr(row, kind, True)
                row.skill = row.skill or str(target.get("skill") or "")
            elif kind == "role":
                row.roles.append(str(target.get("role", "")))
            elif kind == "user":
                row.users.append(str(target.get("user_id", "")))
        rows.append(row)
    return rows


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def rows_of_form(form: FormData) -> list[StepRow]:
    """The form's non-empty step rows, in order."""
    rows = []
    for i in range(MAX_STEPS + SPARE_ROWS):
        row = StepRow(
            after_min=_text(form, f"s{i}_after"),
            oncall=bool(_text(form, f"s{i}_oncall")),
            lead=bool(_text(form, f"s{i}_lead")),
            skill=_text(form, f"s{i}_skill"),
            roles=[v for v in form.getlist(f"s{i}_roles") if isinstance(v, str)][: len(ROLES)],
            users=[v for v in form.getlist(f"s{i}_users") if isinstance(v, str) and v][:10],
        )
        if not row.blank:
            rows.append(row)
    return rows


def steps_of_rows(rows: Sequence[StepRow]) -> list[dict[str, Any]]:
    """The steps the rows say (for PolicyIn to check); InvalidInput for minutes that are no number."""
    steps = []
    for i, row in enumerate(rows):
        text = row.after_min.strip() or "0"
        try:
            minutes = Decimal(text)
            seconds = int(minutes * 60)
        except (InvalidOperation, ValueError, OverflowError):
            raise InvalidInput(
                f"steps[{i}].after_s: step {i + 1}: {text!r} is not a number of minutes"
            ) from None
        targets: list[dict[str, Any]] = []
        skill = row.skill or None
        if row.oncall:
            targets.append({"type": "oncall", "skill": skill})
        if row.lead:
            targets.append({"type": "lead", "skill": skill})
        targets += [{"type": "role", "role": r} for r in row.roles]
        targets += [{"type": "user", "user_id": u} for u in row.users]
        steps.append({"after_s": seconds, "targets": targets})
    return steps


def problem(e: ValidationError | CloudError) -> tuple[str, int]:
    """What was wrong, with a step's and target's place said as the form numbers them."""
    if isinstance(e, CloudError):
        return str(e), e.status_code
    parts = []
    for error in e.errors(include_url=False):
        loc = list(error.get("loc", ()))
        where = ".".join(str(p) for p in loc)
        human = []
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            where = f"steps[{loc[1]}]" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[2:])
            human.append(f"step {loc[1] + 1}")
            if len(loc) >= 4 and loc[2] == "targets" and isinstance(loc[3], int):
                human.append(f"target {loc[3] + 1}")
        prefix = f"{where}: " + "".join(f"{h}: " for h in human) if where else ""
        parts.append(f"{prefix}{error['msg']}")
    return "; ".join(parts), 422


def _mistake(e: ValidationError | CloudError, form: Mapping[str, Any]) -> Mistake:
    message, status = problem(e)
    return Mistake(message, form, "", status)


async def _page(
    request: Request, principal: Principal, template: str, context: Mapping[str, Any], mistake: Mistake
) -> Response:
    lang = language_of(request, principal)
    full = {"labels": labels(lang), "role_names": role_labels(lang), **context}
    return render_form(request, principal, template, full, mistake)


# -- the list


@router.get("/oncall/policies")
async def policies_page(
    request: Request,
    session: SessionDep,
    principal: Read,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    result = await service.list_policies(session, principal, cursor=cursor, limit=service.DEFAULT_PAGE)
    sites = await visibility.visible_sites(session, principal, P.ALARMS_ACKNOWLEDGE)
    company_id = principal.company_id
    named = [t.get("user_id") for p in result.items for s in p.steps for t in s.get("targets", [])]
    names = await service.user_names(session, company_id, named) if company_id is not None else {}
    context = {
        "policies": result.items,
        "next_cursor": result.next_cursor,
        "site_names": {s.id: s.name for s in sites},
        "names": names,
        "defaults": {track: recipients.default_policy(track) for track in TRACKS},
        "can_manage": principal.can(P.ALERTS_MANAGE),
        "minutes": _minutes,
    }
    return await _page(request, principal, "oncall/policies.html", context, NO_MISTAKE)


# -- a policy's form


async def _form_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    policy: EscalationPolicy | None,
    rows: list[StepRow],
    form: Mapping[str, Any],
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    company_id = policy.company_id if policy is not None else principal.company_id
    staff = (
        [(u.id, u.display_name) for u in await service.staff_options(session, company_id)]
        if company_id is not None
        else []
    )
    sites = await visibility.visible_sites(session, principal, P.ALERTS_MANAGE)
    site_name = ""
    if policy is not None and policy.site_id is not None:
        site_name = (await visibility.get_site(session, principal, policy.site_id, P.ALARMS_ACKNOWLEDGE)).name
    can_manage = principal.can(P.ALERTS_MANAGE, policy.site_id) if policy is not None else True
    if policy is not None and policy.site_id is None:
        can_manage = principal.can(P.ALERTS_MANAGE) and principal.sites(P.ALERTS_MANAGE) is None
    shown = rows + [StepRow() for _ in range(max(0, min(SPARE_ROWS, MAX_STEPS - len(rows))))]
    context = {
        "policy": policy,
        "site_name": site_name,
        "rows": shown,
        "form": form,
        "staff": staff,
        "staff_names": dict(staff),
        "site_options": [(s.id, s.name) for s in sites],
        "skills": SKILLS,
        "tracks": TRACKS,
        "roles": ROLES,
        "can_manage": can_manage,
    }
    return await _page(
        request,
        principal,
        "oncall/policy.html",
        context,
        Mistake(mistake.error, form, "", mistake.status_code),
    )


def _policy_form(policy: EscalationPolicy | None, track: str = "maintenance") -> dict[str, Any]:
    if policy is None:
        default = recipients.default_policy(track)
        return {
            "name": "",
            "site_id": "",
            "track": track,
            "skill": "",
            "ack_timeout_min": _minutes(default.ack_timeout_s),
            "repeat_s": str(default.repeat_s),
        }
    return {
        "name": policy.name,
        "site_id": str(policy.site_id or ""),
        "track": policy.track,
        "skill": policy.skill,
        "ack_timeout_min": _minutes(policy.ack_timeout_s),
        "repeat_s": str(policy.repeat_s),
    }


@router.get("/oncall/policies/new")
async def new_policy_page(
    request: Request,
    session: SessionDep,
    principal: Manage,
    track: Annotated[str, Query(max_length=20)] = "maintenance",
) -> Response:
    track = track if track in TRACKS else "maintenance"
    rows = rows_of_steps(recipients.default_policy(track).steps)
    return await _form_view(request, session, principal, None, rows, _policy_form(None, track))


def _scalar_fields(form: FormData) -> dict[str, str]:
    return {k: _text(form, k) for k in ("name", "site_id", "track", "skill", "ack_timeout_min", "repeat_s")}


def _seconds(text: str, name: str, per: int) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(Decimal(text) * per)
    except (InvalidOperation, ValueError, OverflowError):
        raise InvalidInput(f"{name}: {text!r} is not a number") from None


@router.post("/oncall/policies")
async def create_policy(request: Request, session: SessionDep, principal: Manage) -> Response:
    form_data = await request.form()
    fields = _scalar_fields(form_data)
    rows = rows_of_form(form_data)
    try:
        draft = PolicyIn.model_validate(
            {
                "site_id": fields["site_id"].strip() or None,
                "track": fields["track"],
                "skill": fields["skill"],
                "name": fields["name"],
                "steps": steps_of_rows(rows),
                "ack_timeout_s": _seconds(fields["ack_timeout_min"], "ack_timeout_min", 60),
                "repeat_s": _seconds(fields["repeat_s"], "repeat_s", 1),
            }
        )
        policy = await service.create_policy(session, principal, draft, ip=client_ip(request))
        await session.commit()
    except CREATE_MISTAKES as e:
        await session.rollback()
        return await _form_view(request, session, principal, None, rows, fields, _mistake(e, fields))
    return done(
        request, principal, "/oncall/policies", N_("Escalation policy %(name)s added."), name=policy.name
    )


@router.get("/oncall/policies/{policy_id}")
async def policy_page(request: Request, session: SessionDep, principal: Read, policy_id: Id) -> Response:
    policy = await service.get_policy(session, principal, policy_id)
    return await _form_view(
        request, session, principal, policy, rows_of_steps(policy.steps), _policy_form(policy)
    )


@router.post("/oncall/policies/{policy_id}")
async def update_policy(request: Request, session: SessionDep, principal: Manage, policy_id: Id) -> Response:
    policy = await service.get_policy(session, principal, policy_id)
    form_data = await request.form()
    changeable = ("name", "skill", "ack_timeout_min", "repeat_s")  # not the site or the track
    fields = {
        **_policy_form(policy),
        **{k: v for k, v in _scalar_fields(form_data).items() if k in changeable},
    }
    rows = rows_of_form(form_data)
    try:
        values = {
            "name": fields["name"],
            "skill": fields["skill"],
            "steps": steps_of_rows(rows),
            "ack_timeout_s": _seconds(fields["ack_timeout_min"], "ack_timeout_min", 60),
            "repeat_s": _seconds(fields["repeat_s"], "repeat_s", 1),
        }
        # A timing left empty keeps what the policy has.
        patch = PolicyPatch.model_validate({k: v for k, v in values.items() if v is not None})
        await service.update_policy(session, principal, policy_id, patch, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        policy = await service.get_policy(session, principal, policy_id)
        return await _form_view(request, session, principal, policy, rows, fields, _mistake(e, fields))
    return done(
        request,
        principal,
        f"/oncall/policies/{policy_id}",
        N_("Escalation policy %(name)s saved."),
        name=fields["name"],
    )


@router.post("/oncall/policies/{policy_id}/delete")
async def delete_policy(request: Request, session: SessionDep, principal: Manage, policy_id: Id) -> Response:
    policy = await service.get_policy(session, principal, policy_id)
    name = policy.name
    await service.delete_policy(session, principal, policy_id, ip=client_ip(request))
    await session.commit()
    return done(request, principal, "/oncall/policies", N_("Escalation policy %(name)s removed."), name=name)
