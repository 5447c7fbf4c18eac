"""The registry, lineage and audit log through a server: ``vault.registry``, ``vault.lineage`` and
``vault.audit`` of a :class:`~labvault.client.vault.ServerVault`.

Same method names and entity types as the local services (``services/registry``,
``services/lineage``, ``services/audit``), so the CLI renders both the same. The server runs every
rule: promotion gates, approvals, the audit chain; this side only sends requests and decodes answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labvault.client import decode
from labvault.client.fetch import write_tree
from labvault.entities import AuditEvent, AuditReport, Decision, ModelVersion, RegisteredModel
from labvault.errors import ValidationError
from labvault.refs import ModelRef, parse_ref
from labvault.services.registry.layout import FileEntry
from labvault.services.registry.show import version_metrics

if TYPE_CHECKING:
    from labvault.client.vault import ServerVault
    from labvault.entities import AliasMove
    from labvault.services.lineage import Lineage, LineageDiff

__all__ = ["ServerAudit", "ServerLineage", "ServerRegistry"]


def _model(text: str) -> ModelRef:
    ref = parse_ref(text, expect=ModelRef)
    if not isinstance(ref, ModelRef):  # parse_ref refused the other forms already
        raise ValidationError(f"{text!r} is not a model reference", hint="write project/model[@version|alias]")
    return ref


def _path(ref: ModelRef) -> str:
    # Names are validated by parse_ref (no separators); quoting keeps any other byte out of the path.
    return f"/models/{quote(ref.project, safe='')}/{quote(ref.model, safe='')}"


def _versioned(text: str) -> tuple[ModelRef, str]:
    ref = _model(text)
    if ref.version is None:
        raise ValidationError(f"{ref} names no version", hint=f"write {ref}@1.2.0 or {ref}@prod")
    return ref, f"{_path(ref)}/versions/{quote(ref.version, safe='')}"


class ServerRegistry:
    """``vault.registry`` through a server (``/api/v1/models``)."""

    def __init__(self, owner: ServerVault) -> None:
        self.owner = owner
        self.transport = owner.transport
        self.last_actor: str | None = None  # who the server recorded for the last approve

    @property
    def audit(self) -> ServerAudit:
        return self.owner.audit  # type: ignore[no-any-return]

    # -- reading ------------------------------------------------------------------------------
    def models(self) -> list[RegisteredModel]:
        return decode.listing(self.transport.request("GET", "/models"), decode.registered_model, "model list")

    def versions(self, name: str, *, include_archived: bool = False) -> list[ModelVersion]:
        ref = _model(name)
        if ref.version is not None:
            raise ValidationError(f"{ref} names a version; versions lists a model", hint=f"write {ref.name}")
        found = self.transport.request("GET", f"{_path(ref)}/versions", params={"archived": include_archived})
        return decode.listing(found, decode.model_version, "version list")

    def aliases(self, name: str) -> dict[str, str]:
        doc = decode.Doc(self.transport.request("GET", _path(_model(name))), "model")
        aliases = doc.mapping("aliases")
        if not all(isinstance(v, str) for v in aliases.values()):
            raise decode.malformed("model", "aliases are not alias -> version")
        return aliases

    def _show(self, ref: str | ModelVersion) -> tuple[ModelVersion, list[FileEntry]]:
        text = ref.ref if isinstance(ref, ModelVersion) else ref
        raw = self.transport.request("GET", _versioned(text)[1])
        files = [
            FileEntry(d.text("path"), d.digest("digest"), d.integer("size"))
            for d in (decode.Doc(f, "version file") for f in decode.Doc(raw, "model version").items("files"))
        ]
        return decode.model_version({**raw, "files": raw.get("file_count")}), files

    def resolve(self, ref: str) -> ModelVersion:
        return self._show(ref)[0]

    def files(self, ref: str | ModelVersion) -> list[FileEntry]:
        return self._show(ref)[1]

    def metrics(self, ref: str | ModelVersion) -> dict[str, object] | None:
        return version_metrics(self.owner.objects, self.files(ref))[0]

    def show_version(self, ref: str) -> tuple[ModelVersion, list[FileEntry], dict[str, Any] | None]:
        """A version, its files and its ``metrics.json`` (read verified): ``models show P/M@V``."""
        version, files = self._show(ref)
        return version, files, version_metrics(self.owner.objects, files)[0]

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        found = self.transport.request("GET", f"{_path(_model(name))}/history", params={"alias": alias})
        return decode.listing(found, decode.alias_move, "alias history")

    # -- files on this machine ----------------------------------------------------------------
    def materialize(self, ref: str, dest: Path | str, *, flat: bool = False) -> tuple[ModelVersion, Path]:
        """Write a verified copy at ``dest/PROJECT/MODEL/VERSION`` (or into ``dest`` with ``flat``)."""
        version = self.resolve(ref)
        rel = "." if flat else f"{version.project}/{version.model}/{version.version}"
        return version, write_tree(self.owner.objects, version.content, Path(dest), rel)

    def get(self, ref: str) -> Path:
        """The local path of a verified copy cached in the user's cache folder; unchanged, no download."""
        from labvault.client.model_cache import cached_copy

        version, files = self._show(ref)
        return cached_copy(self.owner.objects, version, files)

    # -- writing ------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        path: Path | str | None = None,
        *,
        run: str | None = None,
        artifact: str | None = None,
        version: str | None = None,
        bump: str | None = None,
        message: str | None = None,
        allow_modified: bool = False,
        follow_links: bool = False,
    ) -> tuple[ModelVersion, bool]:
        """Register a run's artifact, or a local folder (its objects uploaded first, then the record)."""
        ref = _model(name)
        if ref.version is not None and not ref.is_alias and version is None:
            version = ref.version
        body: dict[str, Any] = {"run": run, "artifact": artifact, "version": version, "bump": bump, "message": message}
        if path is not None:
            from labvault.client.model_cache import upload_folder

            body["tree"] = str(upload_folder(self.owner.objects, Path(path), follow_links=follow_links))
            body["allow_modified"] = allow_modified
            body["path"] = str(Path(path).resolve())  # source.path, as a local registration records it
        elif run is None:
            raise ValidationError(
                "nothing to register", hint="give the model's folder, or --from run:ID --artifact NAME"
            )
        doc = self.transport.request(
            "POST", f"{_path(ref)}/versions", json={k: v for k, v in body.items() if v is not None}
        )
        return decode.model_version(doc), decode.Doc(doc, "registration").flag("created")

    def archive(self, ref: str, *, reason: str | None = None) -> tuple[ModelVersion, bool]:
        doc = self.transport.request("POST", f"{_versioned(ref)[1]}/archive", json={"reason": reason})
        return decode.model_version(doc), decode.Doc(doc, "archive").flag("changed")

    def promote(
        self,
        ref: str,
        alias: str,
        *,
        reason: str | None = None,
        waive_rollback_plan: str | None = None,
        raise_on_refusal: bool = True,
    ) -> Decision:
        """Ask the server to move ``alias``; its policy's gates run there. A refusal comes back as the
        decision (and, with ``raise_on_refusal``, raises as a local refusal does)."""
        model, _ = _versioned(ref)
        body = {"version": model.version, "reason": reason, "waive_rollback_plan": waive_rollback_plan}
        found = decode.decision(
            self.transport.request(
                "POST",
                f"{_path(model)}/aliases/{quote(alias, safe='')}",
                json={**body, "raise_on_refusal": False},
            )
        )
        if raise_on_refusal and found.action == "refuse":
            from labvault.services.registry import PromotionRefused

            raise PromotionRefused(found)
        return found

    def check(self, ref: str, alias: str, *, waive_rollback_plan: str | None = None) -> Decision:
        model, _ = _versioned(ref)
        params = {"version": model.version, "waive_rollback_plan": waive_rollback_plan}
        return decode.decision(
            self.transport.request("GET", f"{_path(model)}/aliases/{quote(alias, safe='')}/check", params=params)
        )

    def approve(self, ref: str, alias: str, *, message: str | None = None) -> bool:
        model, _ = _versioned(ref)
        doc = decode.Doc(
            self.transport.request(
                "POST",
                f"{_path(model)}/aliases/{quote(alias, safe='')}/approve",
                json={"version": model.version, "message": message},
            ),
            "approval",
        )
        self.last_actor = doc.text("by")
        return doc.flag("new")

    def rollback(self, name: str, alias: str, *, reason: str | None = None) -> Decision:
        path = f"{_path(_model(name))}/aliases/{quote(alias, safe='')}/rollback"
        return decode.decision(self.transport.request("POST", path, json={"reason": reason}))

    def unset_alias(self, name: str, alias: str, *, reason: str | None = None) -> Decision:
        path = f"{_path(_model(name))}/aliases/{quote(alias, safe='')}"
        return decode.decision(self.transport.request("DELETE", path, params={"reason": reason}))

    def verify_audit(self, *, against: str | None = None) -> AuditReport:
        return self.audit.verify(against=against)


class ServerAudit:
    """``vault.registry.audit`` / ``vault.audit`` through a server (``/api/v1/audit``)."""

    def __init__(self, owner: ServerVault) -> None:
        self.owner = owner
        self.transport = owner.transport

    def events(
        self,
        *,
        subject_prefix: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditEvent]:
        params = {"subject": subject_prefix, "action": action, "limit": limit}
        found = decode.listing(self.transport.request("GET", "/audit", params=params), decode.audit_event, "audit log")
        return found if newest_first else found[::-1]  # the server answers newest first

    def verify(self, *, against: str | None = None) -> AuditReport:
        if against is not None:
            # Parsed here: a head kept in a file is a file on this machine, and the server gets the head.
            from labvault.services.audit import parse_anchor

            seq, hexd = parse_anchor(against)
            against = f"sha256:{hexd}" if seq is None else f"{seq} sha256:{hexd}"
        return decode.audit_report(self.transport.request("GET", "/audit/verify", params={"against": against}))


class ServerLineage:
    """``vault.lineage`` through a server (``/api/v1/lineage``)."""

    def __init__(self, owner: ServerVault) -> None:
        self.owner = owner
        self.transport = owner.transport

    def default_direction(self, ref: str) -> str:
        """Downstream for a snapshot, upstream for everything else (as the local service)."""
        return "downstream" if ref.strip().startswith("data:") else "upstream"

    def walk(self, ref: str, *, direction: str, depth: int | None = None) -> Lineage:
        from labvault.client.decode_lineage import lineage

        params = {"ref": ref, "direction": direction, "depth": depth}
        return lineage(self.transport.request("GET", "/lineage", params=params))

    def upstream(self, ref: str, *, depth: int | None = None) -> Lineage:
        return self.walk(ref, direction="upstream", depth=depth)

    def downstream(self, ref: str, *, depth: int | None = None) -> Lineage:
        return self.walk(ref, direction="downstream", depth=depth)

    def diff(self, a: str, b: str) -> LineageDiff:
        from labvault.client.decode_lineage import lineage_diff

        return lineage_diff(self.transport.request("GET", "/lineage/diff", params={"a": a, "b": b}))
