"""Helpers for the data snapshot tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def write_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


@pytest.fixture
def dataset(project: Path) -> Path:
    """A small folder with a CSV, a JSON Lines file, a nested folder and a symlink."""
    root = write_tree(
        project / "data",
        {
            "train.csv": "id,score,label\n1,0.5,a\n2,1.5,b\n3,,a\n",
            "events.jsonl": '{"t": 1, "kind": "x"}\n{"t": 2.5, "kind": "y"}\n',
            "images/a.bin": b"\x00" * 100,
            "images/b.bin": b"\x01" * 50,
            "notes/readme.txt": "hello\n",
        },
    )
    (root / "latest.csv").symlink_to("train.csv")
    return root
