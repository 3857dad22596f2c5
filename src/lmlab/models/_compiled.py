"""What the compiled (Cython) kernels share: loading them with a useful error, and Hogwild over Python threads
(the kernels release the GIL for a whole slice, so plain threads run them in parallel - no OpenMP, no numba
runtime)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from types import ModuleType


def load_kernels(name: str) -> ModuleType:
    """The compiled module ``lmlab.models.<name>``, or a one-line error that says how to build it."""
    try:
        return importlib.import_module(f"lmlab.models.{name}")
    except ImportError as exc:
        from lmlab.errors import LmlabError

        raise LmlabError(
            f"the compiled kernel lmlab.models.{name} is missing ({exc}); it is built when the package is "
            "installed: run `pip install -e .` (or `make setup`) with a C compiler available"
        ) from None


def run_slices(fn: Callable[..., object], nslices: int, args: tuple, name: str = "lmlab-slice") -> None:
    """Call ``fn(s, *args)`` for every slice ``s`` in ``range(nslices)``, slice 0 on the calling thread and each
    other slice on a thread of its own; wait for all, then re-raise the first error any of them raised."""
    if nslices <= 1:
        if nslices == 1:
            fn(0, *args)
        return
    errors: list[BaseException] = []

    def run(s: int) -> None:
        try:
            fn(s, *args)
        except BaseException as exc:  # re-raised on the calling thread below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(s,), name=f"{name}-{s}") for s in range(1, nslices)]
    for th in workers:
        th.start()
    run(0)
    for th in workers:
        th.join()
    if errors:
        raise errors[0]
