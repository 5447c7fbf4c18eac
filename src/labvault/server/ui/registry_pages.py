"""Registry pages: models, a model's versions and aliases with their history and policy results, a
version, and the maintainer's actions (promote / set an alias, roll back).

``/models`` · ``/models/PROJECT/MODEL`` · ``/models/PROJECT/MODEL/versions/VERSION`` ·
``/models/PROJECT/MODEL/promote?version=&alias=`` (the confirmation: what the alias's policy will
check) · ``POST /models/PROJECT/MODEL/promote`` · ``POST /models/PROJECT/MODEL/rollback``.

A promotion the policy refuses (exit 1 at the CLI) is shown in the page with each gate, not as an
error. Readers see no action; the POST routes need the maintainer role and the CSRF token.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse

from labvault.entities import Decision
from labvault.entities.access import role_allows
from labvault.errors import LabvaultError, NotAllowed
from labvault.server.deps import Caller
from labvault.server.errors import STATUS_OF_EXIT_CODE
from labvault.server.ui import render
from labvault.server.ui.session import check_csrf, page_caller

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Reader = Annotated[Caller, Depends(page_caller("reader"))]
Maintainer = Annotated[Caller, Depends(page_caller("maintainer"))]
Text = Annotated[str | None, Form(max_length=10_000)]
Short = Annotated[str, Form(min_length=1, max_length=128)]
#: Refused promotions shown on a model's page (the audit log keeps them all).
REFUSALS_SHOWN = 20


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, who: Reader) -> HTMLResponse:
    return render(request, "models/index.html", models=who.vault.registry.models())


@router.get("/models/{project}/{model}", response_class=HTMLResponse)
def model_page(request: Request, project: str, model: str, who: Reader) -> HTMLResponse:
    return _model_page(request, who, f"{project}/{model}")


@router.get("/models/{project}/{model}/versions/{version}", response_class=HTMLResponse)
def version_page(request: Request, project: str, model: str, version: str, who: Reader) -> HTMLResponse:
    registry = who.vault.registry
    found = registry.resolve(f"{project}/{model}@{version}")
    return render(
        request,
        "models/version.html",
        version=found,
        files=registry.files(found),
        metrics=registry.metrics(found),
        can_maintain=_can_maintain(who),
    )


@router.get("/models/{project}/{model}/promote", response_class=HTMLResponse)
def confirm_page(
    request: Request,
    project: str,
    model: str,
    who: Maintainer,
    version: Annotated[str, Query(min_length=1, max_length=64)],
    alias: Annotated[str, Query(min_length=1, max_length=128)],
    reason: Annotated[str, Query(max_length=10_000)] = "",
    waive_rollback_plan: Annotated[str, Query(max_length=10_000)] = "",
) -> HTMLResponse:
    """What the alias's policy will check before the move is confirmed; nothing is evaluated yet
    (a policy's checks run commands, which a GET must not start)."""
    return _confirm_page(request, who, f"{project}/{model}@{version}", alias, reason, waive_rollback_plan)


@router.post("/models/{project}/{model}/approve", response_class=HTMLResponse)
def approve_action(
    request: Request,
    project: str,
    model: str,
    who: Maintainer,
    version: Annotated[str, Form(min_length=1, max_length=64)],
    alias: Short,
    csrf_token: Text = None,
    message: Text = None,
) -> HTMLResponse:
    """Record the caller's approval of the version for the alias (a policy's ``approvals`` gate counts them)."""
    check_csrf(request, csrf_token)
    ref = f"{project}/{model}@{version}"
    added = who.vault.registry.approve(ref, alias, message=message or None)
    return _confirm_page(request, who, ref, alias, "", "", approved=added)


@router.post("/models/{project}/{model}/promote", response_class=HTMLResponse)
def promote_action(
    request: Request,
    project: str,
    model: str,
    who: Maintainer,
    version: Annotated[str, Form(min_length=1, max_length=64)],
    alias: Short,
    csrf_token: Text = None,
    reason: Text = None,
    waive_rollback_plan: Text = None,
) -> HTMLResponse:
    check_csrf(request, csrf_token)
    name = f"{project}/{model}"

    def act() -> Decision:
        return who.vault.registry.promote(
            f"{name}@{version}",
            alias,
            reason=reason or None,
            waive_rollback_plan=waive_rollback_plan or None,
            raise_on_refusal=False,
        )

    return _acted(request, who, name, act)


@router.post("/models/{project}/{model}/rollback", response_class=HTMLResponse)
def rollback_action(
    request: Request,
    project: str,
    model: str,
    who: Maintainer,
    alias: Short,
    csrf_token: Text = None,
    reason: Text = None,
) -> HTMLResponse:
    check_csrf(request, csrf_token)
    name = f"{project}/{model}"
    return _acted(request, who, name, lambda: who.vault.registry.rollback(name, alias, reason=reason or None))


# -- helpers ----------------------------------------------------------------------------------------
def _confirm_page(
    request: Request, who: Caller, ref: str, alias: str, reason: str, waive: str, approved: bool | None = None
) -> HTMLResponse:
    registry = who.vault.registry
    found = registry.resolve(ref)
    policy = registry.policy().for_alias(found.project, found.model, alias)
    approvals = [
        e
        for e in registry.audit.events(subject_prefix=found.ref, action="approve", newest_first=True)
        if e.subject == found.ref and e.details.get("alias") == alias
    ]
    return render(
        request,
        "models/confirm.html",
        version=found,
        alias=alias,
        current=registry.aliases(found.name).get(alias),
        policy=policy.canonical() if policy is not None else None,
        approvals=approvals,
        approved=approved,
        reason=reason,
        waive_rollback_plan=waive,
    )


def _can_maintain(who: Caller) -> bool:
    return role_allows(who.token.role, "maintainer")


def _acted(request: Request, who: Caller, name: str, act: Any) -> HTMLResponse:
    """Run a form's action and show the model page with its outcome. The page is the UI's one place
    that maps a failed action to the user: the message and hint in the page, with the HTTP status
    the JSON API would give (a refusal by the policy is an outcome, shown with status 200)."""
    try:
        decision: Decision = act()
    except LabvaultError as err:
        status = err.status if isinstance(err, NotAllowed) else STATUS_OF_EXIT_CODE.get(err.exit_code, 500)
        return _model_page(request, who, name, error=err, status_code=status)
    return _model_page(request, who, name, decision=decision)


def _model_page(
    request: Request,
    who: Caller,
    name: str,
    *,
    decision: Decision | None = None,
    error: LabvaultError | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    registry = who.vault.registry
    versions = registry.versions(name, include_archived=True)
    aliases = registry.aliases(name)
    moves = registry.history(name)
    history: dict[str, list[Any]] = {alias: [] for alias in aliases}
    for move in reversed(moves):  # newest first
        history.setdefault(move.alias, []).append(move)
    refusals = registry.audit.events(
        subject_prefix=f"{name}@", action="refuse", limit=REFUSALS_SHOWN, newest_first=True
    )
    return render(
        request,
        "models/model.html",
        status_code=status_code,
        model_name=name,
        project=name.split("/", 1)[0],
        model=name.split("/", 1)[1],
        versions=versions,
        aliases=aliases,
        history=history,
        refusals=refusals,
        decision=decision,
        error=error,
        can_maintain=_can_maintain(who),
    )
