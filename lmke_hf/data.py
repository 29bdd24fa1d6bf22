"""Deprecated alias of :mod:`lmke_hf.kg`, kept for one release; import from ``lmke_hf.kg`` instead.

The code that lived here is now split over the modules of :mod:`lmke_hf.kg` (see its docstring). This module
re-exports the same objects (``lmke_hf.data.load_kg is lmke_hf.kg.load_kg``), so
``from lmke_hf.data import load_kg, KnowledgeGraph, ...`` keeps working. Importing it does not warn.
Private helpers are not re-exported: import them from their new module (e.g. ``lmke_hf.kg.negatives._rng``).
"""

from . import kg as _kg
from .kg import *  # noqa: F403  (exactly lmke_hf.kg.__all__)

__all__ = list(_kg.__all__)
