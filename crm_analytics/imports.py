"""Importing a library without the optional dependencies it would load and not use."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def import_without(module: str, hidden: tuple[str, ...]) -> ModuleType:
    """Import ``module`` while the ``hidden`` modules cannot be imported.

    For a library that loads an optional dependency only if it is installed: its
    ``import`` of a hidden module fails and it goes on without it. Afterwards the hidden
    modules can be imported again as usual. Modules already loaded are never hidden, and a
    ``module`` already loaded is returned as it is.
    """
    if module in sys.modules:
        return sys.modules[module]
    newly_hidden = [name for name in hidden if name not in sys.modules]
    sys.modules.update(dict.fromkeys(newly_hidden))  # a None entry makes `import name` raise ImportError
    try:
        return importlib.import_module(module)
    finally:
        for name in newly_hidden:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
