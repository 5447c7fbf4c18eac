"""The public surface of ``import labvault``: ``__all__`` is exactly what the package exposes.

Names are exposed eagerly (imported into ``labvault/__init__.py``) or lazily (the ``_LAZY`` map
read by the module's ``__getattr__``); either way they must be listed in ``__all__``, and every
name in ``__all__`` must resolve. No hard-coded list: adding a name means adding it to both places.
"""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import labvault


def _exposed() -> set[str]:
    """Public names the package itself defines or re-exports from labvault, eager or lazy."""
    names = set(labvault._LAZY)
    for name, value in vars(labvault).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue  # private, or a subpackage that importing it attached to the package
        module = getattr(value, "__module__", None)
        if isinstance(module, str) and module.split(".")[0] == "labvault":
            names.add(name)
    return names | {"__version__"}


def test_all_matches_what_is_exposed() -> None:
    declared = set(labvault.__all__)
    exposed = _exposed()
    assert sorted(exposed - declared) == [], "exposed but missing from __all__"
    assert sorted(declared - exposed) == [], "in __all__ but not exposed"
    assert len(labvault.__all__) == len(declared), "duplicates in __all__"


def test_every_name_in_all_resolves_in_a_fresh_interpreter() -> None:
    code = (
        "import labvault\n"
        "missing = [n for n in labvault.__all__ if getattr(labvault, n, None) is None]\n"
        "print(','.join(missing))\n"
        "from labvault import *  # noqa\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_lazy_names_are_the_real_objects() -> None:
    import importlib

    for name, module in labvault._LAZY.items():
        assert getattr(labvault, name) is getattr(importlib.import_module(module), name)


def test_unknown_attributes_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        labvault.no_such_name  # noqa: B018


def test_dir_lists_the_public_names() -> None:
    assert set(labvault.__all__) <= set(dir(labvault))


def test_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    assert labvault.__version__ == version("labvault")
