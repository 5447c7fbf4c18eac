"""Entities built from rows of our own tables, without their dataclass ``__init__``.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; for a
:class:`~labvault.entities.Run` of twenty fields that is most of the Python time of a search
returning a few dozen runs. :func:`record_builder` writes, once, a function that sets each slot
through its descriptor instead: the same object, built in under half the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["record_builder"]

T = TypeVar("T")


def record_builder(cls: type[T], order: Sequence[str]) -> Callable[..., T]:
    """A function taking every field of ``cls`` positionally, in ``order``, and returning the instance.

    Only for a slotted dataclass without ``__post_init__``: there is no check to skip. ``order``
    names each field exactly once, so that a field added to ``cls`` fails here, at import, instead
    of being left unset.
    """
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} is not a slotted dataclass without __post_init__")
    fields = [f.name for f in dataclasses.fields(cls)]
    if sorted(order) != sorted(fields):
        raise TypeError(f"{cls.__name__} has the fields {fields}, the builder was given {list(order)}")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    body = []
    for i, name in enumerate(order):
        namespace[f"_set{i}"] = getattr(cls, name).__set__  # the slot's member descriptor
        body.append(f"    _set{i}(self, a{i})\n")
    params = ", ".join(f"a{i}" for i in range(len(order)))
    source = f"def build({params}):\n    self = _new(_cls)\n{''.join(body)}    return self\n"
    exec(source, namespace)  # the text is made of field positions only, never of a value
    build: Callable[..., T] = namespace["build"]
    return build
