"""Who may use the team server: API tokens with roles, and the idempotency keys of retried requests.

A token reads ``lvt_<id>_<secret>``. The id is public (listings, ``token revoke``); the secret is
shown once, and only ``sha256(salt + secret)`` is stored, with a random salt per token. A request's
token is looked up by its id and its hash compared in constant time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from labvault.entities.access import ROLES, ApiToken, role_allows
from labvault.entities.core import utcnow
from labvault.errors import Conflict, NotAllowed, NotFound, ValidationError
from labvault.storage.meta.repos import access as repo
from labvault.storage.meta.store import MetaStore

__all__ = ["ABANDONED_CLAIM", "TOKEN_PREFIX", "Access", "check_request_key"]

TOKEN_PREFIX = "lvt_"
_TOKEN_RE = re.compile(r"lvt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,255}")
_KEY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_EXPIRY_DAYS = 36_500
#: A claim still pending after this long was left by a server that died mid-request; a retry takes it over.
ABANDONED_CLAIM = timedelta(minutes=2)
_NO_TOKEN_HINT = "send `Authorization: Bearer <token>`; an admin makes one with `labvault server token create`"

T = TypeVar("T")


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode("ascii")).hexdigest()


def check_request_key(key: str) -> None:
    """An idempotency key: 1 to 128 of letters, digits and ``. _ : -`` (stored as it is)."""
    if not _KEY_RE.fullmatch(key):
        raise ValidationError("invalid idempotency key", hint="use 1 to 128 of letters, digits and . _ : -")


class Access:
    """Tokens (``vault.access``): create, list, revoke, authenticate; and idempotent requests."""

    def __init__(self, *, meta: Callable[[], MetaStore], user: Callable[[], str]) -> None:
        self._meta = meta
        self._user = user

    # -- tokens ---------------------------------------------------------------------------------
    def create_token(self, user: str, *, role: str, expires_days: int | None = None) -> tuple[ApiToken, str]:
        """A new token for ``user``; returns it and its full text, which is never shown again."""
        if not isinstance(user, str) or not _USER_RE.fullmatch(user):
            raise ValidationError(
                f"invalid user name {user[:80]!r}", hint="use letters, digits and . _ @ + - (an e-mail address is fine)"
            )
        if role not in ROLES:
            raise ValidationError(f"unknown role {role!r}", hint=f"use one of: {', '.join(ROLES)}")
        if expires_days is not None and not 0 < expires_days <= _MAX_EXPIRY_DAYS:
            raise ValidationError(
                f"--expires must be between 1 and {_MAX_EXPIRY_DAYS} days, not {expires_days}",
                hint="leave it out for a token that does not expire",
            )
        now = utcnow()
        token = ApiToken(
            id=secrets.token_hex(6),
            user=user,
            role=role,
            created_at=now,
            created_by=self._user(),
            expires_at=now + timedelta(days=expires_days) if expires_days is not None else None,
            revoked_at=None,
        )
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        with self._meta().transaction() as conn:
            repo.insert_token(conn, token, salt=salt, digest=_hash(salt, secret))
        return token, f"{TOKEN_PREFIX}{token.id}_{secret}"

    def tokens(self) -> list[ApiToken]:
        with self._meta().read() as conn:
            return repo.list_tokens(conn)

    def revoke_token(self, token_id: str) -> ApiToken:
        """Revoke the token with this id (the ``lvt_<id>`` part, or the whole token)."""
        match = _TOKEN_RE.fullmatch(token_id)
        token_id = match.group(1) if match else token_id.removeprefix(TOKEN_PREFIX)
        if not re.fullmatch(r"[0-9a-f]{12}", token_id):
            raise ValidationError(
                f"invalid token id {token_id[:80]!r}", hint="see the ids with `labvault server token list`"
            )
        with self._meta().transaction() as conn:
            found = repo.token_secret_hash(conn, token_id)
            if found is None:
                raise NotFound(f"no token {token_id}", hint="see the ids with `labvault server token list`")
            now = utcnow()
            if repo.revoke_token(conn, token_id, now):
                return dataclasses.replace(found[0], revoked_at=now)
        return found[0]  # revoked already: a no-op

    def authenticate(self, text: str | None) -> ApiToken:
        """The active token ``text`` is, else :class:`NotAllowed` (401)."""
        token_id, secret = self.split_token(text)
        with self._meta().read() as conn:
            found = repo.token_secret_hash(conn, token_id)
        return self.verify_token(found, secret)

    @staticmethod
    def split_token(text: str | None) -> tuple[str, str]:
        """A token's id and secret, else :class:`NotAllowed` (401)."""
        if not text:
            raise NotAllowed("no API token", hint=_NO_TOKEN_HINT)
        match = _TOKEN_RE.fullmatch(text)
        if match is None:
            raise NotAllowed("malformed API token", hint=_NO_TOKEN_HINT)
        return match.group(1), match.group(2)

    @staticmethod
    def verify_token(found: tuple[ApiToken, str, str] | None, secret: str) -> ApiToken:
        """The stored token (with its salt and hash) if ``secret`` is its secret and it is active,
        else :class:`NotAllowed` (401)."""
        if found is None or not hmac.compare_digest(_hash(found[1], secret), found[2]):
            raise NotAllowed("unknown API token", hint=_NO_TOKEN_HINT)
        token = found[0]
        state = token.state(utcnow())
        if state != "active":
            raise NotAllowed(f"the API token {token.id} is {state}", hint="ask an admin for a new token")
        return token

    @staticmethod
    def require(token: ApiToken, needed: str) -> None:
        """Refuse (403) a token whose role is below ``needed``."""
        if not role_allows(token.role, needed):
            raise NotAllowed(
                f"{token.user} is a {token.role}; this needs the {needed} role",
                hint="ask an admin for a token with that role",
                status=403,
            )

    # -- idempotent requests --------------------------------------------------------------------
    def once(self, scope: str, key: str | None, work: Callable[[], T], *, encode: Callable[[T], Any]) -> Any:
        """Run ``work`` once per ``(scope, key)``; a retry with the same key gets the first answer.

        The key is claimed before the work runs and released if it fails, so a retry of a failed
        request runs it again; a retry while the first is still running is a Conflict (retry later).
        A claim left pending for two minutes (its server was killed mid-request) is taken over by
        the next retry, which runs the work: if the killed request had stored it, it is stored twice.
        """
        if key is None:
            return encode(work())
        check_request_key(key)
        scope = scope[:300]
        now = utcnow()
        with self._meta().transaction() as conn:
            found = repo.claim_request(conn, scope, key, now, stale_before=now - ABANDONED_CLAIM)
        if found is not None:
            state, result = found
            if state == "done" and result is not None:
                return json.loads(result)
            raise Conflict("a request with this idempotency key is still running", hint="retry in a moment")
        try:
            answer = encode(work())
        except BaseException:
            with self._meta().transaction() as conn:
                repo.release_request(conn, scope, key)
            raise
        with self._meta().transaction() as conn:
            repo.finish_request(conn, scope, key, json.dumps(answer))
        return answer
