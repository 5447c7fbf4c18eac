"""``data diff``: walk two snapshot trees together (equal subtrees are skipped by digest), then
compare tabular files: schema, record count, per-column drift (see ``drift.py``) and new or vanished
categorical values; and the one-line verdict (:func:`diff_verdict`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from labvault.entities import ColumnDrift, DataDiff, Snapshot, TabularChange
from labvault.refs import Digest
from labvault.services.snapshots.drift import CategoricalStats, NumericStats, psi, top_changes
from labvault.services.snapshots.tabular import iter_rows
from labvault.storage.objects.tree import TreeEntry, decode_tree, entry_digest

if TYPE_CHECKING:
    from labvault.services.snapshots.service import DataService

__all__ = ["DRIFT_PSI", "Verdict", "diff_snapshots", "diff_verdict"]

#: The usual reading of the population stability index: above 0.2, a distribution has shifted.
DRIFT_PSI = 0.2
#: New or vanished categorical values listed per column.
VALUES_SHOWN = 10
_NUMERIC_PREFIXES = ("int", "uint", "float", "double", "decimal", "halffloat")


def _entries(svc: DataService, digest: Digest) -> dict[str, TreeEntry]:
    return {e.name: e for e in decode_tree(svc.objects.get_bytes(digest, verify=True), digest=digest)}


def _walk(svc: DataService, a: dict[str, TreeEntry], b: dict[str, TreeEntry], prefix: str, out: dict[str, Any]) -> None:
    for name in sorted(set(a) | set(b)):
        ea, eb = a.get(name), b.get(name)
        path = prefix + name
        if ea is not None and eb is not None and ea.type == eb.type:
            if ea.type == "dir":
                if ea.digest != eb.digest:  # equal subtrees are never opened
                    _walk(svc, _entries(svc, entry_digest(ea)), _entries(svc, entry_digest(eb)), path + "/", out)
            elif ea.digest != eb.digest or ea.target != eb.target:
                out["modified"].append(path)
                if ea.type == "file" and ea.extra.get("schema") is not None and eb.extra.get("schema") is not None:
                    out["tabular"].append((path, ea, eb))
            continue
        for side, entry in (("removed", ea), ("added", eb)):
            if entry is None:
                continue
            if entry.type == "dir":
                sub: dict[str, Any] = {"added": [], "removed": [], "modified": [], "tabular": []}
                empty: dict[str, TreeEntry] = {}
                below = _entries(svc, entry_digest(entry))
                _walk(svc, below if side == "removed" else empty, below if side == "added" else empty, path + "/", sub)
                out[side].extend(sub[side])
            else:
                out[side].append(path)


def _is_numeric(kind: str | None) -> bool:
    return kind is not None and kind.lower().startswith(_NUMERIC_PREFIXES)


def _stats(svc: DataService, path: str, entry: TreeEntry, columns: list[str], numeric: set[str]) -> list[Any]:
    stats: list[Any] = [NumericStats() if c in numeric else CategoricalStats() for c in columns]
    name = path.rsplit("/", 1)[-1]
    with svc.objects.open(entry_digest(entry), verify=True) as raw:
        for row in iter_rows(name, raw, columns):
            for s, v in zip(stats, row, strict=True):
                s.add(v)
    return stats


def _appeared(before: CategoricalStats, after: CategoricalStats) -> tuple[str, ...]:
    """Values ``after`` has and ``before`` has not, most frequent first (at most ``VALUES_SHOWN``).

    Exact while neither side passed the distinct-value cap; past it, a value missing from the
    capped counts may only be uncounted, so nothing is claimed.
    """
    if before.capped or after.capped:
        return ()
    fresh = [(-n, v) for v, n in after.counts.items() if v not in before.counts]
    return tuple(v for _, v in sorted(fresh)[:VALUES_SHOWN])


def _tabular_change(svc: DataService, path: str, ea: TreeEntry, eb: TreeEntry) -> TabularChange:
    sa = dict(ea.extra["schema"])
    sb = dict(eb.extra["schema"])
    common = [c for c in sa if c in sb]
    numeric = {c for c in common if _is_numeric(sa[c]) and _is_numeric(sb[c])}
    before = _stats(svc, path, ea, common, numeric)
    after = _stats(svc, path, eb, common, numeric)
    drift = []
    for col, x, y in zip(common, before, after, strict=True):
        if isinstance(x, NumericStats):
            drift.append(ColumnDrift(col, "numeric", x.to_json(), y.to_json(), psi(x.sample, y.sample)))
        else:
            new, vanished = _appeared(x, y), _appeared(y, x)
            drift.append(
                ColumnDrift(col, "categorical", x.to_json(), y.to_json(), None, top_changes(x, y), new, vanished)
            )
    return TabularChange(
        path=path,
        record_count_before=ea.extra.get("record_count"),
        record_count_after=eb.extra.get("record_count"),
        columns_added=tuple(c for c in sb if c not in sa),
        columns_removed=tuple(c for c in sa if c not in sb),
        columns_retyped=tuple((c, sa[c], sb[c]) for c in common if sa[c] != sb[c]),
        columns=tuple(drift),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The one-line answer of ``data diff``: ``no drift``, ``drift`` (columns above the PSI threshold)
    or ``schema changed`` (columns added, removed or retyped in a tabular file)."""

    status: Literal["no change", "no drift", "drift", "schema changed"]
    psi_threshold: float
    drifted_columns: tuple[str, ...] = ()
    max_psi: float | None = None
    schema: tuple[str, ...] = ()  # "added country", "removed x", "retyped amount int->float"

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"status": self.status, "psi_threshold": self.psi_threshold}
        if self.status == "drift":
            doc["drifted_columns"] = list(self.drifted_columns)
        if self.status == "schema changed":
            doc["schema"] = list(self.schema)
        return doc


def diff_verdict(diff: DataDiff, *, psi_threshold: float = DRIFT_PSI) -> Verdict:
    """Schema changes first (a PSI over a retyped column means little), then numeric drift."""
    schema: list[str] = []
    for t in diff.tabular:
        schema += [f"added {c}" for c in t.columns_added]
        schema += [f"removed {c}" for c in t.columns_removed]
        schema += [f"retyped {c} {a}->{b}" for c, a, b in t.columns_retyped]
    if schema:
        return Verdict("schema changed", psi_threshold, schema=tuple(schema))
    drifted = sorted({c.column for t in diff.tabular for c in t.columns if c.psi is not None and c.psi > psi_threshold})
    if drifted:
        return Verdict("drift", psi_threshold, tuple(drifted), diff.max_psi)
    if not diff.changed:
        return Verdict("no change", psi_threshold)
    return Verdict("no drift", psi_threshold, max_psi=diff.max_psi)


def diff_snapshots(svc: DataService, a: Snapshot, b: Snapshot) -> DataDiff:
    ta, tb = _entries(svc, a.content_hash), _entries(svc, b.content_hash)
    if a.kind == "file" and b.kind == "file" and len(ta) == 1 and len(tb) == 1:
        (na,) = ta
        (eb,) = tb.values()
        tb = {na: eb}  # a single-file dataset compares its one file, whatever it was called
    out: dict[str, Any] = {"added": [], "removed": [], "modified": [], "tabular": []}
    _walk(svc, ta, tb, "", out)
    return DataDiff(
        a=a.ref,
        b=b.ref,
        added=tuple(sorted(out["added"])),
        removed=tuple(sorted(out["removed"])),
        modified=tuple(sorted(out["modified"])),
        tabular=tuple(_tabular_change(svc, p, ea, eb) for p, ea, eb in out["tabular"]),
        record_count_before=a.record_count,
        record_count_after=b.record_count,
    )
