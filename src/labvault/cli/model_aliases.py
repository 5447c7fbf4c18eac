"""``labvault models promote|check|rollback|approve|history`` and ``models alias set|unset``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from labvault.cli.context import open_vault
from labvault.cli.render import OUTPUT, print_json
from labvault.errors import CheckFailed

if TYPE_CHECKING:
    from labvault.entities import AliasMove, Decision

__all__ = ["decision_json", "register"]

JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
alias_app = typer.Typer(help="Set (under the alias's policy, as promote does) or unset an alias.", no_args_is_help=True)


def decision_json(d: Decision) -> dict[str, Any]:
    return {
        "ref": d.ref,
        "alias": d.alias,
        "action": d.action,
        "moved": d.moved,
        "passed": d.passed,
        "before": d.before,
        "after": d.after,
        "policy_hash": f"sha256:{d.policy_hash}" if d.policy_hash else None,
        "audit_event": d.audit_seq,
        "gates": [g.to_json() for g in d.gates],
    }


def _gate_table(d: Decision) -> None:
    if not d.gates:
        OUTPUT.info(f"no policy for {d.alias} in labvault.yaml: the alias moves freely")
        return
    OUTPUT.table(
        ["gate", "name", "result", "measured", "threshold", "detail"],
        [
            (g.gate, g.name, "pass" if g.passed else "FAIL", g.measured, g.threshold, g.detail)
            + ((f"output {g.output.short}",) if g.output else ("",))
            for g in d.gates
        ],
    )


def promote(
    ref: str = typer.Argument(..., help="PROJECT/MODEL@VERSION (or @ALIAS) to promote."),
    to: str = typer.Option(..., "--to", help="The alias to move, e.g. staging or prod."),
    message: str | None = typer.Option(None, "--message", "-m", help="The reason, kept in the history."),
    waive: str | None = typer.Option(
        None, "--waive-rollback-plan", help="Why a rollback_plan: required alias may move with no previous version."
    ),
    json_output: bool = JSON,
) -> None:
    """Move an alias to a version if the alias's policy allows it; exit 1 listing every unmet gate."""
    _move(ref, to, message=message, waive=waive, json_output=json_output)


@alias_app.command("set")
def set_alias(
    ref: str = typer.Argument(..., help="PROJECT/MODEL@VERSION (or @ALIAS) the alias should point at."),
    alias: str = typer.Argument(..., help="The alias to move, e.g. staging or prod."),
    message: str | None = typer.Option(None, "--message", "-m", help="The reason, kept in the history."),
    waive: str | None = typer.Option(
        None, "--waive-rollback-plan", help="Why a rollback_plan: required alias may move with no previous version."
    ),
    json_output: bool = JSON,
) -> None:
    """Point an alias at a version: `models promote REF --to ALIAS` by another name, under the same policy."""
    _move(ref, alias, message=message, waive=waive, json_output=json_output)


def _move(ref: str, to: str, *, message: str | None, waive: str | None, json_output: bool) -> None:
    with open_vault() as vault:
        d = vault.registry.promote(ref, to, reason=message, waive_rollback_plan=waive, raise_on_refusal=False)
    if json_output:
        print_json(decision_json(d))
    else:
        if d.action == "noop":
            OUTPUT.line(f"{d.ref.split('@')[0]}@{d.alias} already points at {d.after}; nothing to do")
        elif d.gates or not d.moved:
            _gate_table(d)
        if d.moved:
            OUTPUT.line(f"{d.alias}: {d.before or 'unset'} -> {d.after}  (audit event #{d.audit_seq})")
    if d.action == "refuse":
        from labvault.services.registry import PromotionRefused

        raise PromotionRefused(d)


def check(
    ref: str = typer.Argument(..., help="PROJECT/MODEL@VERSION (or @ALIAS) to evaluate."),
    alias: str = typer.Option(..., "--for", help="The alias whose policy to evaluate."),
    waive: str | None = typer.Option(None, "--waive-rollback-plan", help="Evaluate as if this waiver were given."),
    json_output: bool = JSON,
) -> None:
    """Evaluate an alias's gates for a version without moving anything (exit 0 all pass, 1 some fail)."""
    with open_vault() as vault:
        d = vault.registry.check(ref, alias, waive_rollback_plan=waive)
    if json_output:
        print_json(decision_json(d))
    else:
        _gate_table(d)
        OUTPUT.line(f"{d.ref} {'may' if d.passed else 'may not'} move to {d.alias}")
    if not d.passed:
        from labvault.services.registry.gates import unmet_gates

        raise CheckFailed(
            f"{len(d.failed_gates)} of {len(d.gates)} gates unmet for {d.ref} -> {d.alias}: {unmet_gates(d.gates)}",
            hint="see the table above (or --json) for the measured values",
        )


def rollback(
    name: str = typer.Argument(..., help="PROJECT/MODEL."),
    alias: str = typer.Argument(..., help="The alias to move back."),
    message: str | None = typer.Option(None, "--message", "-m", help="The reason, kept in the history."),
    json_output: bool = JSON,
) -> None:
    """Move an alias back to the version it pointed to before its latest move (no gates; audited)."""
    with open_vault() as vault:
        d = vault.registry.rollback(name, alias, reason=message)
    if json_output:
        print_json(decision_json(d))
    else:
        OUTPUT.line(f"{d.alias}: {d.before} -> {d.after}  (rolled back; audit event #{d.audit_seq})")


def approve(
    ref: str = typer.Argument(..., help="PROJECT/MODEL@VERSION to approve."),
    alias: str = typer.Option(..., "--for", help="The alias the approval is for."),
    message: str | None = typer.Option(None, "--message", "-m", help="A comment stored with the approval."),
    json_output: bool = JSON,
) -> None:
    """Approve a version for an alias as the acting user (each user counts once)."""
    with open_vault() as vault:
        recorded = vault.registry.approve(ref, alias, message=message)
        # Through a server, the approver is the token's user, as the server recorded it.
        user = getattr(vault.registry, "last_actor", None) or vault.user
    if json_output:
        print_json({"ref": ref, "alias": alias, "user": user, "recorded": recorded})
    else:
        OUTPUT.line(
            f"{user} approved {ref} for {alias}" if recorded else f"{user} had already approved {ref} for {alias}"
        )


def _move_json(m: AliasMove) -> dict[str, Any]:
    from labvault.entities import format_time

    return {
        "model": f"{m.project}/{m.model}",
        "alias": m.alias,
        "action": m.action,
        "before": m.before,
        "after": m.after,
        "at": format_time(m.at),
        "actor": m.actor,
        "reason": m.reason,
        "policy_hash": f"sha256:{m.policy_hash}" if m.policy_hash else None,
        "gates": list(m.gates),
        "audit_event": m.audit_seq,
    }


def history(
    name: str = typer.Argument(..., help="PROJECT/MODEL."),
    alias: str | None = typer.Argument(None, help="Only this alias."),
    json_output: bool = JSON,
) -> None:
    """Every alias move, oldest first, with the gates evaluated and their measured values."""
    with open_vault() as vault:
        moves = vault.registry.history(name, alias)
    docs = [_move_json(m) for m in moves]
    if json_output:
        print_json(docs)
        return

    def gates(d: dict[str, Any]) -> str:
        return ", ".join(f"{g['name']}={g['measured']} ({g['threshold']})" for g in d["gates"]) or "-"

    OUTPUT.table(
        ["at", "alias", "action", "from", "to", "by", "gates", "reason"],
        [
            (d["at"], d["alias"], d["action"], d["before"] or "-", d["after"] or "-", d["actor"], gates(d), d["reason"])
            for d in docs
        ],
    )


@alias_app.command("unset")
def unset(
    name: str = typer.Argument(..., help="PROJECT/MODEL."),
    alias: str = typer.Argument(..., help="The alias to remove."),
    message: str | None = typer.Option(None, "--message", "-m", help="The reason, kept in the history."),
    json_output: bool = JSON,
) -> None:
    """Remove an alias (audited; its history is kept). An alias that is not set: exit 0, nothing recorded."""
    with open_vault() as vault:
        d = vault.registry.unset_alias(name, alias, reason=message)
    if json_output:
        print_json(decision_json(d))
    elif not d.moved:
        OUTPUT.line(f"{d.ref}@{alias} is already unset; nothing to do")
    else:
        OUTPUT.line(f"{alias}: {d.before} -> unset  (audit event #{d.audit_seq})")


def register(app: typer.Typer) -> None:
    app.command("promote")(promote)
    app.command("check")(check)
    app.command("rollback")(rollback)
    app.command("approve")(approve)
    app.command("history")(history)
    app.add_typer(alias_app, name="alias")
