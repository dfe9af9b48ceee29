"""Modules imported at their first use: numba kernel modules cost nothing until a kernel runs.

`import numba` takes about half a second (it pulls llvmlite, scipy, yaml). A reducer module
binds its kernel module with `K = lazy_module("mia.analytics._x_kernels")` instead of
`from . import _x_kernels as K`: its config classes (which `mia.config` composes, so every
command imports them) then import without numba, and the recorder reaches its first logged
event without paying for it; its kernel thread (mia.warmup) imports numba meanwhile.

The stand-in imports the real module at the first attribute it is asked for, through the
import system (thread-safe: a second thread waits for the first one's import to finish), then
holds the module's names itself, so later reads cost what a module attribute costs.
"""

from __future__ import annotations

import importlib
import sys
import types

__all__ = ["lazy_module"]


class _LazyModule(types.ModuleType):
    def __getattr__(self, attr: str):  # only for names not (yet) in the stand-in
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


def lazy_module(name: str) -> types.ModuleType:
    """`name` (absolute), imported when an attribute of it is first read; the module itself
    when it is already imported."""
    module = sys.modules.get(name)
    return module if module is not None else _LazyModule(name)
