"""The apps' optional dependencies (the ``apps`` extra), imported on first use with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

#: Module name -> the package that provides it.
PACKAGES = {"sklearn": "scikit-learn", "pyogrio": "pyogrio", "shapely": "shapely", "matplotlib": "matplotlib"}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a MissingDependencyError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = PACKAGES.get(module.split(".")[0], module)
        raise MissingDependencyError(
            f'This needs {package}, which is not installed: pip install "earth-embed[apps]" (or pip install {package}).'
        ) from err
