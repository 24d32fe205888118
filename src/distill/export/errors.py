"""The export errors and the optional-runtime import, free of torch and numpy.

Kept apart from :mod:`.source` so that the target registry (:mod:`.targets`), and the CLI help
text built from it, import in milliseconds.
"""
from __future__ import annotations

import importlib


class ExportError(ValueError):
    """Input an export cannot use; the message names the file, operator or extra and what would work."""


class MissingRuntimeError(ExportError):
    """An optional runtime is not installed; the message names the pip extra."""


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or fail naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingRuntimeError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not installed ({exc}); "
            f"install the extra: pip install 'distill[{extra}]'") from exc
