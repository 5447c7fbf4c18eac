"""Moving aliases: promote (under the alias's policy), check, rollback, unset; approvals; archive.

An alias move and its audit event commit in one transaction. A promotion reads the alias's lock
version before its gates run and moves the alias only if it is unchanged at commit: of two racing
promotions one wins, the other is refused as a lost race, and both attempts are in the audit log.
"""

from __future__ import annotations

from typing import Any

from labvault.entities import AliasMove, Decision, ModelVersion, utcnow
from labvault.errors import CheckFailed, Conflict, NotFound, ValidationError
from labvault.refs import validate_name
from labvault.services.registry.context import RegistryContext
from labvault.services.registry.gates import AliasState, evaluate_gates, unmet_gates
from labvault.services.registry.policy import AliasPolicy, PolicyFile
from labvault.services.registry.read import resolve, resolve_in
from labvault.services.registry.register import parse_model_name
from labvault.storage.meta.repos import registry as repo
from labvault.storage.meta.repos import registry_history as history_repo
from labvault.storage.meta.repos.object_refs import add_refs
from labvault.storage.meta.store import Connection

__all__ = ["PromotionRefused", "approve", "archive", "check", "history", "promote"]


class PromotionRefused(CheckFailed):
    """The alias's policy said no; ``decision`` holds every gate with its measured value."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(
            f"{decision.ref} was not promoted to {decision.alias}: unmet gates: {unmet_gates(decision.gates)}",
            hint=f"the refusal is in `labvault audit log`; see every gate with "
            f"`labvault models check {decision.ref} --for {decision.alias}`",
        )
        self.decision = decision


def _usable(version: ModelVersion, alias: str) -> None:
    if version.archived:
        raise ValidationError(
            f"{version.ref} is archived and cannot be moved to {alias}", hint="register a new version instead"
        )


def _read_state(
    ctx: RegistryContext, ref: str, alias: str, from_alias: str | None, *, approvals: bool
) -> tuple[ModelVersion, AliasState]:
    """The version and what the gates need, read in one transaction."""
    with ctx.meta.read() as conn:
        mid, vid, version = resolve_in(conn, ref)
        names = [alias] if from_alias is None else [alias, from_alias]
        states = repo.alias_states(conn, mid, names)
        current_id, current, lock = states.get(alias, (None, None, 0))
        _, from_current, from_lock = states.get(from_alias or "", (None, None, 0))
        approvers = tuple(history_repo.approvers(conn, vid, alias)) if approvals else ()
    return version, AliasState(
        model_id=mid,
        version_id=vid,
        current=current,
        current_id=current_id,
        lock=lock,
        from_current=from_current,
        from_lock=from_lock,
        approvers=approvers,
    )


def _policy_for(ctx: RegistryContext, ref: str, alias: str) -> tuple[PolicyFile, AliasPolicy | None]:
    validate_name(alias, what="alias")
    policy_file = ctx.policy()
    parsed = parse_model_name(ref)
    return policy_file, policy_file.for_alias(parsed.project, parsed.model, alias)


def check(ctx: RegistryContext, ref: str, alias: str, *, waive_rollback_plan: str | None = None) -> Decision:
    """Evaluate ``alias``'s gates for a version, moving nothing."""
    policy_file, policy = _policy_for(ctx, ref, alias)
    version, state = _read_state(
        ctx, ref, alias, policy.from_ if policy else None, approvals=bool(policy and policy.approvals)
    )
    _usable(version, alias)
    gates = evaluate_gates(ctx, version, alias, policy, state, waive_rollback_plan=waive_rollback_plan)
    return Decision(
        ref=version.ref,
        alias=alias,
        action="check",
        moved=False,
        before=state.current,
        after=state.current,
        gates=tuple(gates),
        policy_hash=policy_file.hash,
    )


def promote(
    ctx: RegistryContext,
    ref: str,
    alias: str,
    *,
    reason: str | None = None,
    waive_rollback_plan: str | None = None,
    raise_on_refusal: bool = True,
) -> Decision:
    """Move ``alias`` to the version if its policy's gates pass; else refuse (audited)."""
    policy_file, policy = _policy_for(ctx, ref, alias)
    from_alias = policy.from_ if policy else None
    version, state = _read_state(ctx, ref, alias, from_alias, approvals=bool(policy and policy.approvals))
    _usable(version, alias)
    if state.current == version.version:
        return Decision(version.ref, alias, "noop", False, state.current, state.current, (), policy_file.hash)
    gates = evaluate_gates(ctx, version, alias, policy, state, waive_rollback_plan=waive_rollback_plan)
    passed = all(g.passed for g in gates)
    actor = ctx.user()
    details: dict[str, Any] = {
        "alias": alias,
        "version": version.version,
        "reason": reason,
        "gates": [g.to_json() for g in gates],
        "policy": policy.canonical() if policy else None,
    }
    if waive_rollback_plan:
        details["waive_rollback_plan"] = waive_rollback_plan
    subject = f"{version.name}@{alias}"
    lost = False
    with ctx.meta.transaction() as conn:
        head = ctx.audit.lock(conn)
        now = utcnow()
        if passed:
            lost = _moved_meanwhile(conn, state, alias, from_alias)
        if passed and not lost:
            moved = repo.move_alias(
                conn, state.model_id, alias, version_id=state.version_id, expected_lock=state.lock, actor=actor, now=now
            )
            lost = not moved
        if passed and not lost:
            action = "promote"
        else:
            action = "refuse"
            details["refused"] = "lost race: the alias moved while the gates ran" if lost else "unmet gates"
        event = ctx.audit.append(
            conn,
            actor=actor,
            action=action,
            subject=subject,
            before=state.current,
            after=version.version if action == "promote" else state.current,
            policy_hash=policy_file.hash,
            details=details,
            now=now,
            head=head,
        )
        outputs = [(g.output, "blob") for g in gates if g.output is not None]
        if outputs:
            add_refs(conn, f"audit:{event.seq}", outputs)  # type: ignore[arg-type]
        if action == "promote":
            history_repo.insert_move(
                conn,
                model_id=state.model_id,
                alias=alias,
                action="promote",
                from_version_id=state.current_id,
                to_version_id=state.version_id,
                at=now,
                actor=actor,
                reason=reason,
                policy_hash=policy_file.hash,
                gates=details["gates"],
                audit_seq=event.seq,
            )
    ctx.audit.publish(event)
    decision = Decision(
        ref=version.ref,
        alias=alias,
        action=action,
        moved=action == "promote",
        before=state.current,
        after=version.version if action == "promote" else state.current,
        gates=tuple(gates),
        policy_hash=policy_file.hash,
        audit_seq=event.seq,
    )
    if lost:
        raise Conflict(
            f"{subject} moved while {version.ref} was being evaluated; this promotion lost the race",
            hint=f"check where it points now with `labvault models show {version.name}`, then promote again",
        )
    if action == "refuse" and raise_on_refusal:
        raise PromotionRefused(decision)
    return decision


def _moved_meanwhile(conn: Connection, state: AliasState, alias: str, from_alias: str | None) -> bool:
    _, lock = repo.alias_row(conn, state.model_id, alias, for_update=True)
    if lock != state.lock:
        return True
    if from_alias is not None:
        _, from_lock = repo.alias_row(conn, state.model_id, from_alias, for_update=True)
        return from_lock != state.from_lock
    return False


def _model(conn: Connection, name: str) -> tuple[int, str]:
    ref = parse_model_name(name)
    if ref.version is not None:
        raise ValidationError(f"give the model without a version: {ref.name}", hint=f"write {ref.name}")
    mid = repo.model_id(conn, ref.project, ref.model)
    if mid is None:
        raise NotFound(f"no model {ref.name} in the registry", hint="list models with `labvault models list`")
    return mid, ref.name


def approve(ctx: RegistryContext, ref: str, alias: str, *, message: str | None = None) -> bool:
    """Record the acting user's approval of a version for an alias; False if they had already."""
    validate_name(alias, what="alias")
    actor = ctx.user()
    event = None
    with ctx.meta.transaction() as conn:
        head = ctx.audit.lock(conn)
        _, version_id, version = resolve_in(conn, ref)
        _usable(version, alias)
        now = utcnow()
        if history_repo.add_approval(conn, version_id, alias, actor=actor, now=now, message=message):
            event = ctx.audit.append(
                conn,
                actor=actor,
                action="approve",
                subject=version.ref,
                after=alias,
                policy_hash=ctx.policy_hash(),
                details={"alias": alias, "version": version.version, "message": message},
                now=now,
                head=head,
            )
    ctx.audit.publish(event)
    return event is not None


def archive(ctx: RegistryContext, ref: str, *, reason: str | None = None) -> tuple[ModelVersion, bool]:
    parsed = parse_model_name(ref)
    if parsed.version is None or parsed.is_alias:
        raise ValidationError(f"archive takes project/model@VERSION, not {ref!r}", hint="name the exact version")
    version = resolve(ctx, parsed)
    if version.archived:
        return version, False
    actor = ctx.user()
    with ctx.meta.transaction() as conn:
        head = ctx.audit.lock(conn)
        _, version_id, version = resolve_in(conn, parsed)
        pointing = repo.aliases_on(conn, version_id)
        if pointing:
            raise Conflict(
                f"{version.ref} is what {', '.join(pointing)} point(s) at; it cannot be archived",
                hint="move or unset those aliases first",
            )
        now = utcnow()
        repo.archive_version(conn, version_id, actor=actor, now=now)
        event = ctx.audit.append(
            conn,
            actor=actor,
            action="archive",
            subject=version.ref,
            before="active",
            after="archived",
            policy_hash=ctx.policy_hash(),
            details={"reason": reason},
            now=now,
            head=head,
        )
    ctx.audit.publish(event)
    return resolve(ctx, parsed), True


def history(ctx: RegistryContext, name: str, alias: str | None = None) -> list[AliasMove]:
    if alias is not None:
        validate_name(alias, what="alias")
    with ctx.meta.read() as conn:
        mid, label = _model(conn, name)
        moves = history_repo.list_moves(conn, mid, alias)
    if alias is not None and not moves:
        raise NotFound(f"{label} has no alias {alias!r}", hint=f"see its aliases with `labvault models show {label}`")
    return moves
