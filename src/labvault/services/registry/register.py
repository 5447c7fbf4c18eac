"""``register``: files (from a folder or a run's recorded artifact) -> an immutable version tree."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labvault.entities import ModelVersion, utcnow
from labvault.errors import Conflict, IntegrityError, ValidationError
from labvault.refs import ModelRef, parse_ref
from labvault.services.registry import runlink
from labvault.services.registry.context import RegistryContext, bump_version, parse_version
from labvault.services.registry.layout import (
    CHECKSUM,
    GENERATED,
    FileEntry,
    build_version_tree,
    checksum_text,
    collect_path,
    parse_checksums,
    wrap_version,
)
from labvault.storage.meta.repos import registry as repo
from labvault.storage.meta.repos.object_refs import add_refs
from labvault.storage.objects.fileio import sha256_file

__all__ = ["BUMPS", "parse_model_name", "register_version"]

BUMPS = ("major", "minor", "patch")
_RETRIES = 20


_Content = runlink.ArtifactContent


def parse_model_name(text: str) -> ModelRef:
    ref = parse_ref(text, expect=ModelRef)
    if not isinstance(ref, ModelRef):
        raise ValidationError(f"{text!r} is not a model reference", hint="write project/model[@version|alias]")
    return ref


def _from_path(ctx: RegistryContext, path: Path, *, follow_links: bool, source_path: str | None = None) -> _Content:
    raw, links = collect_path(path, follow_links=follow_links)
    links.pop(CHECKSUM, None)  # replaced by the one labvault writes, as a file of that name is
    notes: list[str] = []
    top = dict(raw)
    if CHECKSUM in top:
        _verify_user_checksums(path if path.is_dir() else path.parent, top[CHECKSUM], top)
        notes.append(f"{CHECKSUM} from the folder verified; replaced by the one labvault writes")
    files = [FileEntry(rel, ctx.objects.put_file(full), full.stat().st_size) for rel, full in raw if rel != CHECKSUM]
    shown = source_path if source_path is not None else str(path.resolve())
    return _Content(files=files, source={"path": shown}, notes=notes, links=links)


def _verify_user_checksums(base: Path, listing: Path, top: dict[str, Path]) -> None:
    expected = parse_checksums(listing.read_text(encoding="utf-8", errors="replace"), where=str(listing))
    for rel, hexd in sorted(expected.items()):
        full = top.get(rel)
        if full is None:
            raise IntegrityError(
                f"{listing} lists {rel}, which is not in {base}", hint="restore the file or fix checksum.txt"
            )
        if sha256_file(full) != hexd:
            raise IntegrityError(
                f"{base / rel} does not match its sha256 in {listing}",
                hint="the file changed; restore it or fix checksum.txt",
            )


def _assemble(
    ctx: RegistryContext, content: _Content, generated: dict[str, bytes]
) -> tuple[list[FileEntry], list[str]]:
    """User files + generated ones (a user file of the same name wins) + checksum.txt over all of them."""
    files = list(content.files)
    notes = list(content.notes)
    present = {f.path for f in files} | set(content.links)
    for name in GENERATED:
        if name in present:
            notes.append(f"{name} is the one from the model folder; labvault's was not written")
            continue
        data = generated[name]
        files.append(FileEntry(name, ctx.objects.put_bytes(data), len(data)))
    listing = checksum_text(files)
    files.append(FileEntry(CHECKSUM, ctx.objects.put_bytes(listing), len(listing)))
    return files, notes


def register_version(
    ctx: RegistryContext,
    name: str,
    path: Path | None = None,
    *,
    run: str | None = None,
    artifact: str | None = None,
    version: str | None = None,
    bump: str | None = None,
    message: str | None = None,
    allow_modified: bool = False,
    follow_links: bool = False,
    source_path: str | None = None,
) -> tuple[ModelVersion, bool]:
    """Register content as ``name@version``; returns ``(version, created)``.

    ``source_path`` is recorded as the folder's ``source.path`` instead of ``path`` (a server
    registering a client's folder from its temporary copy records the client's path, as text).

    Links in the folder are kept as links; one pointing outside it is refused unless
    ``follow_links`` says to store what it points at.

    Identical content under an existing version is a no-op (``created`` False); different content
    under an existing version raises :class:`Conflict`: version numbers are never reused. Without
    ``version`` and ``bump``, a tree identical to the highest live version's, from the same run, is
    that version (``created`` False).
    """
    ref = parse_model_name(name)
    if ref.version is not None:
        if ref.is_alias:
            raise ValidationError(f"cannot register under an alias ({ref})", hint="give project/model, and --version")
        if version is not None and version != ref.version:
            raise ValidationError(f"{ref} and --version {version} disagree", hint="give the version once")
        version = ref.version
    if version is not None and bump is not None:
        raise ValidationError("--version and --bump exclude each other", hint="give one of them")
    if version is not None:
        parse_version(version)
    if bump is not None and bump not in BUMPS:
        raise ValidationError(f"invalid --bump {bump!r}", hint="use major, minor or patch")
    if path is None and run is None:
        raise ValidationError("nothing to register", hint="give the model's folder, or --from run:ID --artifact NAME")
    if artifact is not None and run is None:
        raise ValidationError("--artifact needs --from run:ID", hint="name the run whose artifact to register")
    if message is not None and "\n" in message.strip():
        message = " ".join(message.split())

    source = runlink.load_run(ctx, run) if run is not None else None
    # The highest version the automatic number is picked from; the commit checks it is still the highest.
    expected = _highest_version(ctx, ref) if version is None else None
    chosen = version or bump_version(expected, bump)
    # One batch for every object (one durability barrier); the metadata commits after it.
    with ctx.objects.batch():
        if path is not None:
            content = _from_path(ctx, path, follow_links=follow_links, source_path=source_path)
            if source is not None:
                runlink.check_recorded_output(ctx, source, path, content.files, allow_modified, content.notes)
        elif source is not None:
            content = runlink.artifact_content(ctx, source, artifact)
        else:  # refused above: there is a path or a run
            raise ValidationError("nothing to register", hint="give the model's folder, or --from run:ID")
        generated = runlink.generated_files(ctx, source, content.files, content.notes)
        if source is not None:
            content.source["run"] = source.ref
            content.run_id = source.id
        files, notes = _assemble(ctx, content, generated)
        inner, size = build_version_tree(ctx.objects, files, content.links)
        root = wrap_version(ctx.objects, inner, size, project=ref.project, model=ref.model, version=chosen)

    for _ in range(_RETRIES):
        outcome = _commit(
            ctx,
            ref,
            chosen,
            root,
            inner,
            size,
            files,
            content,
            notes,
            message,
            expected=expected,
            auto=version is None,
            reuse_live=version is None and bump is None,
        )
        if not isinstance(outcome, _Taken):
            return outcome
        # Another writer registered meanwhile: wrap the same content under the number after its highest.
        ctx.highest_seen.pop((ref.project, ref.model), None)
        ctx.contended.add((ref.project, ref.model))
        expected = outcome.highest
        chosen = bump_version(expected, bump)
        with ctx.objects.batch():
            root = wrap_version(ctx.objects, inner, size, project=ref.project, model=ref.model, version=chosen)
    raise Conflict(f"could not pick a free version for {ref.name}: others keep registering", hint="retry")


def _highest_version(ctx: RegistryContext, ref: ModelRef) -> str | None:
    """The model's highest version: remembered from this process's last registration, else read."""
    key = (ref.project, ref.model)
    if key not in ctx.contended:
        seen = ctx.highest_seen.get(key)
        if seen is not None:
            return seen
    with ctx.meta.read() as conn:
        found = repo.model_and_highest(conn, ref.project, ref.model)
    return None if found is None else found[1]


@dataclass(frozen=True, slots=True)
class _Taken:
    """The commit found a version above the one the automatic number was picked from: pick again."""

    highest: str | None


def _commit(
    ctx: RegistryContext,
    ref: ModelRef,
    version: str,
    root: Any,
    inner: Any,
    size: int,
    files: list[FileEntry],
    content: _Content,
    notes: list[str],
    message: str | None,
    *,
    expected: str | None,
    auto: bool,
    reuse_live: bool,
) -> tuple[ModelVersion, bool] | _Taken:
    """One transaction: the version row, its object refs and its audit event.

    With ``reuse_live`` (no --version, no --bump), a tree identical to the highest live version's,
    from the same run, is that version: nothing is written, as ``data add`` does for unchanged data.
    """
    actor = ctx.user()
    label = f"{ref.name}@{version}"
    with ctx.meta.transaction() as conn:
        # The audit head is locked first so that every writer takes the locks in the same order.
        head = ctx.audit.lock(conn)
        now = utcnow()
        found = repo.model_and_highest(conn, ref.project, ref.model)
        if found is None:
            mid, highest = repo.ensure_model(conn, ref.project, ref.model, actor=actor, now=now), None
        else:
            mid, highest = found
            if reuse_live:
                live = repo.highest_live_version(conn, mid)
                if live is not None and live.content == inner and live.run_id == content.run_id:
                    return live, False
        if auto:
            # ``version`` is the next one after ``expected``: free as long as nothing is above ``expected``.
            if highest != expected:
                return _Taken(highest)
        elif highest is not None:
            existing = repo.version_row(conn, mid, version, with_aliases=False)
            if existing is not None:
                if existing[1].content == inner:
                    return existing[1], False
                raise Conflict(
                    f"{label} already exists with different content "
                    f"(content {existing[1].content.short} vs {inner.short})",
                    hint="versions are immutable: register with --bump patch or another --version",
                )
        event = ctx.audit.append(
            conn,
            actor=actor,
            action="register",
            subject=label,
            after=str(inner),
            details={
                "tree": str(root),
                "size": size,
                "files": len(files),
                "source": content.source,
                "run": content.run_id,
                "notes": notes,
                "message": message,
            },
            now=now,
            head=head,
        )
        repo.insert_version(
            conn,
            model_id=mid,
            version=version,
            tree=root.hex,
            content=inner.hex,
            size=size,
            files=len(files),
            run_id=content.run_id,
            source=content.source,
            message=message,
            notes=notes,
            created_at=now,
            created_by=actor,
        )
        add_refs(conn, label, [(root, "tree")])
    key = (ref.project, ref.model)
    if key not in ctx.contended:
        ctx.highest_seen[key] = (
            version if highest is None or parse_version(version) > parse_version(highest) else highest
        )
    found_version = ModelVersion(
        project=ref.project,
        model=ref.model,
        version=version,
        tree=root,
        content=inner,
        size=size,
        files=len(files),
        created_at=now,
        created_by=actor,
        run_id=content.run_id,
        message=message,
        source=json.loads(json.dumps(content.source, sort_keys=True)),
        notes=tuple(notes),
    )
    ctx.audit.publish(event)
    return found_version, True
