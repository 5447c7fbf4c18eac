"""The fsck check that every file a tree manifest lists has the size its stored object has.

A manifest's size is what ``data status`` compares first and what ``data show`` reports, so a size
that is not its object's would make a restored copy look "modified" forever. Missing and unreadable
trees or objects are fsck's own findings; this check passes over them.
"""

from __future__ import annotations

from collections.abc import Iterable

from labvault.errors import IntegrityError
from labvault.refs import Digest
from labvault.storage.objects.protocol import ObjectStore
from labvault.storage.objects.tree import decode_tree

__all__ = ["manifest_size_problems"]


def manifest_size_problems(objects: ObjectStore, roots: Iterable[Digest]) -> list[str]:
    """One line per file entry, below the given root trees, whose size differs from its object's."""
    problems: list[str] = []
    seen: set[str] = set()
    stack = [(root, "") for root in roots]
    while stack:
        tree, prefix = stack.pop()
        if tree.hex in seen or not objects.has(tree):
            continue
        seen.add(tree.hex)
        try:
            entries = decode_tree(objects.get_bytes(tree, verify=True), digest=tree)
        except IntegrityError:
            continue
        for entry in entries:
            if entry.digest is None:
                continue
            if entry.type == "dir":
                stack.append((entry.digest, f"{prefix}{entry.name}/"))
            elif objects.has(entry.digest):
                stored = objects.info(entry.digest).size
                if stored != entry.size:
                    problems.append(
                        f"tree {tree}: {prefix}{entry.name} is listed with {entry.size} bytes, "
                        f"but its object {entry.digest} holds {stored}"
                    )
    return sorted(problems)
