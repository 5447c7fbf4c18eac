"""The one loader for every YAML and JSON file labvault reads: bounded, and its errors name the file.

Today ``labvault.yaml``, ``labvault.lock``, ``.labvault/config.json``, a registered model's
``metrics.json`` and ``data_manifest.json``, the model cache's stamps, and the ``direct_url.json`` of
installed distributions (and ``.labvaultignore`` files, through :func:`read_limited`);
params files, ``dvc.yaml`` on import and records pulled from elsewhere later. All of them may come from
someone else (a ``git pull``, a remote), so reading one must never hang, exhaust memory or crash with a
traceback. The limits:

- a file larger than :data:`MAX_FILE_BYTES` (10 MiB) is refused before it is parsed, and so is anything
  that is not a regular file (a FIFO would block forever, ``/dev/zero`` never ends);
- mappings and lists nest at most :data:`MAX_DEPTH` (100) deep, counted after YAML aliases are expanded;
- a YAML document holds at most :data:`MAX_NODES` (500,000) scalars, lists and mappings as written;
- YAML aliases may add at most :data:`MAX_ALIAS_NODES` (100,000) nodes to the document when expanded (the
  "billion laughs" file, 8 levels of 10 aliases, would expand to 10^8), and an alias may not contain itself;
- the text is UTF-8; YAML is read with the safe schema (no Python tags).

Each refusal is a :class:`~labvault.errors.ValidationError` (exit 2) whose one line starts with the file's
name (and the line, where the parser knows it). A file that exists but cannot be read is a
:class:`~labvault.errors.StorageError`; a missing file raises :class:`FileNotFoundError` for the caller
to decide what "missing" means.

PyYAML is imported on first use of a YAML function: JSON files are read on hot paths (``data status``).
YAML is parsed by libyaml when PyYAML has it (about ten times faster), and composed here without
recursion, so that no file within the limits takes long to refuse.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.errors import StorageError, ValidationError

if TYPE_CHECKING:
    import yaml

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "compose_yaml",
    "construct_yaml",
    "load_json",
    "load_yaml",
    "loads_json",
    "loads_yaml",
    "read_limited",
]

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 100
MAX_ALIAS_NODES = 100_000
MAX_NODES = 500_000


def read_limited(path: Path, *, name: str | None = None, hint: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, refused past :data:`MAX_FILE_BYTES`.

    A FIFO, a device or a folder is refused without reading: a FIFO would block the reader forever
    and ``/dev/zero`` never ends. Opened non-blocking for the same reason (it changes nothing for a file).
    """
    shown = name or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot read {shown}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a folder, not a file" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ValidationError(f"{shown} is {what}", hint=hint or f"replace {shown} by a plain file")
        data = b""
        if st.st_size <= MAX_FILE_BYTES:
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise StorageError(f"cannot read {shown}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if st.st_size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        raise ValidationError(
            f"{shown} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; labvault reads no bigger file",
            hint=hint or f"check what {shown} holds",
        )
    return data


def _text(data: bytes | str, shown: str, hint: str | None) -> str:
    if isinstance(data, str):
        if len(data) > MAX_FILE_BYTES:
            raise ValidationError(f"{shown} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", hint=hint)
        return data
    if len(data) > MAX_FILE_BYTES:
        raise ValidationError(f"{shown} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", hint=hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{shown}: not UTF-8 text (byte {exc.start})", hint=hint) from None


def _too_deep(shown: str, hint: str | None, line: int | None = None) -> ValidationError:
    where = f"{shown}:{line}" if line else shown
    return ValidationError(f"{where}: nested more than {MAX_DEPTH} deep", hint=hint)


# -- JSON -------------------------------------------------------------------------------------------
def loads_json(data: bytes | str, *, name: str, hint: str | None = None) -> Any:
    """Parse JSON text read from ``name``, within the limits above."""
    text = _text(data, name, hint)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{name}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})", hint=hint) from None
    except RecursionError:
        raise _too_deep(name, hint) from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ValidationError(f"{name}: invalid JSON: {exc}", hint=hint) from None
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise _too_deep(name, hint)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return doc


def load_json(path: Path, *, name: str | None = None, hint: str | None = None) -> Any:
    """Read and parse the JSON file ``path``; ``name`` is how errors show it (default: the path)."""
    shown = name or str(path)
    return loads_json(read_limited(path, name=shown, hint=hint), name=shown, hint=hint)


# -- YAML -------------------------------------------------------------------------------------------
def _new_loader(text: str) -> Any:
    """libyaml's parser when it is installed (PyYAML's own scans a few hundred KiB a second), safe schema."""
    import yaml

    cls = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    return cls(text)


def _compose(loader: Any) -> yaml.Node | None:
    """Build the node graph from the parser's events without recursion, within the depth and node limits.

    PyYAML's composer recurses once per level (a RecursionError at ~330 levels); this one keeps its own
    stack. An anchor is registered when its node opens, as PyYAML does, so an alias inside the node it
    refers to makes a cycle, which :func:`_check_expansion` refuses.
    """
    import yaml
    from yaml import events

    loader.get_event()  # StreamStart
    if loader.check_event(events.StreamEndEvent):
        return None
    loader.get_event()  # DocumentStart
    anchors: dict[str, yaml.Node] = {}
    stack: list[tuple[yaml.Node, list[yaml.Node]]] = []
    count = 0
    while True:
        event = loader.get_event()
        start: Any = event.start_mark  # libyaml's events carry its own Mark type
        line = start.line + 1 if start else None
        done: yaml.Node
        if isinstance(event, events.CollectionEndEvent):
            node, items = stack.pop()
            node.value = (
                items if isinstance(node, yaml.SequenceNode) else list(zip(items[0::2], items[1::2], strict=True))
            )
            node.end_mark = event.end_mark
            done = node
        elif isinstance(event, events.AliasEvent):
            if event.anchor not in anchors:
                raise _Refused(f"found undefined alias {event.anchor!r}", line)
            done = anchors[event.anchor]
        else:
            count += 1
            if count > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES} nodes", line)
            tag = event.tag
            if isinstance(event, events.ScalarEvent):
                if tag is None or tag == "!":
                    tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                end: Any = event.end_mark
                done = yaml.ScalarNode(tag, event.value, start, end, style=event.style)
            else:
                kind = yaml.SequenceNode if isinstance(event, events.SequenceStartEvent) else yaml.MappingNode
                if tag is None or tag == "!":
                    tag = loader.resolve(kind, None, event.implicit)
                opened = kind(tag, [], start, None, flow_style=event.flow_style)
                if event.anchor is not None:
                    anchors[event.anchor] = opened
                if len(stack) >= MAX_DEPTH:
                    raise _Refused(f"nested more than {MAX_DEPTH} deep", line)
                stack.append((opened, []))
                continue
            if event.anchor is not None:
                anchors[event.anchor] = done
        if not stack:
            break
        stack[-1][1].append(done)
    loader.get_event()  # DocumentEnd
    if not loader.check_event(events.StreamEndEvent):
        mark = loader.peek_event().start_mark
        raise _Refused("expected a single document, found another", mark.line + 1 if mark else None)
    return done


class _Refused(Exception):
    def __init__(self, reason: str, line: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def _check_expansion(root: yaml.Node) -> None:
    """Measure the document as if every alias were copied out; refuse cycles, depth and alias bombs.

    Aliases are shared nodes in the composed graph, so one pass with a memo is linear in the file.
    """
    import yaml

    distinct = 0
    expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes once expanded, depth)
    # Iterative post-order walk: a chain of aliases can be deeper than Python's stack.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.ScalarNode) or not isinstance(node.value, list):
            if key not in expanded:
                distinct += 1
                expanded[key] = (1, 0)
            continue
        children = [c for pair in node.value for c in (pair if isinstance(pair, tuple) else (pair,))]
        if not children_done:
            if key in expanded:
                continue
            if key in open_nodes:
                raise _Refused("an alias refers to a node that contains it", node.start_mark.line + 1)
            open_nodes.add(key)
            distinct += 1
            stack.append((node, True))
            stack.extend((c, False) for c in children)
            continue
        open_nodes.discard(key)
        size = 1 + sum(expanded[id(c)][0] for c in children)
        depth = 1 + max((expanded[id(c)][1] for c in children), default=0)
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} deep once aliases are expanded", node.start_mark.line + 1)
        if size - distinct > MAX_ALIAS_NODES:
            raise _Refused(
                f"aliases expand to more than {MAX_ALIAS_NODES} extra nodes (an alias bomb?)", node.start_mark.line + 1
            )
        expanded[key] = (size, depth)


def compose_yaml(data: bytes | str, *, name: str, hint: str | None = None) -> yaml.Node | None:
    """The YAML node graph of one document (``None`` when empty), checked against every limit.

    Nodes keep their line numbers, for callers that report errors by line (``labvault.yaml``).
    """
    import yaml

    text = _text(data, name, hint)
    loader = _new_loader(text)
    try:
        node = _compose(loader)
        if node is not None:
            _check_expansion(node)
        return node  # type: ignore[no-any-return]
    except _Refused as exc:
        raise ValidationError(
            f"{name}:{exc.line}: {exc.reason}" if exc.line else f"{name}: {exc.reason}", hint=hint
        ) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise ValidationError(f"{name}:{line}: YAML syntax error: {exc.problem}", hint=hint) from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"{name}: YAML syntax error: {exc}", hint=hint) from None
    finally:
        loader.dispose()


def construct_yaml(node: yaml.Node, *, name: str, hint: str | None = None) -> Any:
    """Python values (dicts, lists, str, int, float, bool, None, dates) of a node from :func:`compose_yaml`."""
    import yaml

    try:
        return yaml.constructor.SafeConstructor().construct_document(node)  # type: ignore[no-untyped-call]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ValidationError(f"{name}:{line}: {exc.problem or exc.context}", hint=hint) from None
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{name}: {exc}", hint=hint) from None


def loads_yaml(data: bytes | str, *, name: str, hint: str | None = None) -> Any:
    """Parse one YAML document read from ``name``; an empty document is ``None``."""
    node = compose_yaml(data, name=name, hint=hint)
    return None if node is None else construct_yaml(node, name=name, hint=hint)


def load_yaml(path: Path, *, name: str | None = None, hint: str | None = None) -> Any:
    """Read and parse the YAML file ``path``; ``name`` is how errors show it (default: the path)."""
    shown = name or str(path)
    return loads_yaml(read_limited(path, name=shown, hint=hint), name=shown, hint=hint)
