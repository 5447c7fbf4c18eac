"""Alias moves that skip the gates: rollback and unset, each audited in the move's transaction."""

from __future__ import annotations

from typing import Any

from labvault.entities import Decision, utcnow
from labvault.errors import Conflict, NotFound
from labvault.refs import validate_name
from labvault.services.registry.aliases import _model, _usable
from labvault.services.registry.context import RegistryContext
from labvault.storage.meta.repos import registry as repo
from labvault.storage.meta.repos import registry_history as history_repo
from labvault.storage.meta.store import Connection

__all__ = ["rollback", "unset"]


def rollback(ctx: RegistryContext, name: str, alias: str, *, reason: str | None = None) -> Decision:
    """Move ``alias`` back to where it pointed before its latest move; no gates, audited."""
    validate_name(alias, what="alias")
    actor = ctx.user()
    policy_hash = ctx.policy_hash()
    with ctx.meta.transaction() as conn:
        head = ctx.audit.lock(conn)
        mid, label = _model(conn, name)
        current_id, lock = repo.alias_row(conn, mid, alias, for_update=True)
        stack: list[int | None] = []
        for action, to_id in history_repo.move_targets(conn, mid, alias):
            if action == "rollback":
                if stack:
                    stack.pop()
            else:
                stack.append(to_id)
        if current_id is None and not stack:
            raise NotFound(
                f"{label} has no alias {alias!r}", hint=f"see its aliases with `labvault models show {label}`"
            )
        target_id = stack[-2] if len(stack) >= 2 else None
        if target_id is None:
            raise NotFound(
                f"{label}@{alias} has no earlier version to roll back to",
                hint=f"see its moves with `labvault models history {label} {alias}`",
            )
        target = repo.version_by_id(conn, target_id)
        _usable(target, alias)
        before = repo.version_by_id(conn, current_id).version if current_id is not None else None
        event = _record_move(
            ctx,
            conn,
            head=head,
            model_id=mid,
            label=label,
            alias=alias,
            action="rollback",
            lock=lock,
            from_id=current_id,
            to_id=target_id,
            before=before,
            after=target.version,
            reason=reason,
            policy_hash=policy_hash,
            actor=actor,
            details={"alias": alias, "version": target.version, "reason": reason},
        )
    ctx.audit.publish(event)
    return Decision(target.ref, alias, "rollback", True, before, target.version, (), policy_hash, event.seq)


def unset(ctx: RegistryContext, name: str, alias: str, *, reason: str | None = None) -> Decision:
    """Remove ``alias`` (audited); an alias that is not set is a no-op (action ``noop``, no event)."""
    validate_name(alias, what="alias")
    actor = ctx.user()
    policy_hash = ctx.policy_hash()
    with ctx.meta.transaction() as conn:
        head = ctx.audit.lock(conn)
        mid, label = _model(conn, name)
        current_id, lock = repo.alias_row(conn, mid, alias, for_update=True)
        if current_id is None:
            # Nothing to remove: the outcome the caller asked for already holds, and nothing is recorded.
            return Decision(label, alias, "noop", False, None, None, (), policy_hash)
        before = repo.version_by_id(conn, current_id).version
        event = _record_move(
            ctx,
            conn,
            head=head,
            model_id=mid,
            label=label,
            alias=alias,
            action="unset",
            lock=lock,
            from_id=current_id,
            to_id=None,
            before=before,
            after=None,
            reason=reason,
            policy_hash=policy_hash,
            actor=actor,
            details={"alias": alias, "reason": reason},
        )
    ctx.audit.publish(event)
    return Decision(f"{label}@{before}", alias, "unset", True, before, None, (), policy_hash, event.seq)


def _record_move(
    ctx: RegistryContext,
    conn: Connection,
    *,
    head: Any,
    model_id: int,
    label: str,
    alias: str,
    action: str,
    lock: Any,
    from_id: int | None,
    to_id: int | None,
    before: str | None,
    after: str | None,
    reason: str | None,
    policy_hash: str | None,
    actor: str,
    details: dict[str, Any],
) -> Any:
    """Move an alias without gates, in the caller's transaction, with its audit event and history row."""
    now = utcnow()
    if not repo.move_alias(conn, model_id, alias, version_id=to_id, expected_lock=lock, actor=actor, now=now):
        # The row was read under lock in this transaction, so only a writer ignoring the lock gets here.
        raise Conflict(
            f"{label}@{alias} moved meanwhile; nothing was changed",
            hint=f"check where it points now with `labvault models show {label}`, then retry",
        )
    event = ctx.audit.append(
        conn,
        actor=actor,
        action=action,
        subject=f"{label}@{alias}",
        before=before,
        after=after,
        policy_hash=policy_hash,
        details=details,
        now=now,
        head=head,
    )
    history_repo.insert_move(
        conn,
        model_id=model_id,
        alias=alias,
        action=action,
        from_version_id=from_id,
        to_version_id=to_id,
        at=now,
        actor=actor,
        reason=reason,
        policy_hash=policy_hash,
        gates=[],
        audit_seq=event.seq,
    )
    return event
