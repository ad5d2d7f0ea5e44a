"""Defer EvoTorch's optional heavy imports until they are used (``search.py`` start-up).

``import evotorch`` imports ``cma`` (and through it scipy.stats) for its PyCMAES wrapper and
``wandb`` for its W&B logger at module level, seconds on a 2-core machine although the search
uses neither class unless it logs to W&B. :func:`defer` registers a placeholder module that has
the real module's ``__spec__`` (so ``import x`` finds it loaded) and imports the real module on
the first attribute it does not have (``cma.CMAEvolutionStrategy``, ``wandb.init``,
``x.__path__`` for a submodule import), then takes over its namespace. (The standard library's
``importlib.util.LazyLoader`` cannot do this on Python 3.11: the import statement itself reads
``__spec__`` and so runs the deferred module.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

#: Packages EvoTorch imports at module level but the search only needs on demand.
DEFERRED = ("cma", "wandb")


class _Deferred(types.ModuleType):
    def __getattr__(self, attr: str):
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer(name: str) -> bool:
    """Register ``name`` for deferred import unless it is imported already or not installed."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    module = _Deferred(name)
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__file__ = spec.origin  # inspect.getmodule (run by torch at import) scans every module's __file__
    module.__package__ = spec.parent if spec.submodule_search_locations is None else name
    sys.modules[name] = module
    return True


def defer_optional_imports() -> list[str]:
    """Defer every :data:`DEFERRED` package; returns those deferred now."""
    return [n for n in DEFERRED if defer(n)]
