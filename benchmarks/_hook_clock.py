"""Time spent inside forward hooks, measured within one run."""

from __future__ import annotations

import time


class HookClock:
    """Time spent inside the forward hooks registered between :meth:`__enter__` and
    :meth:`arm` (forward hooks run in registration order): a start hook before them,
    a stop hook after, on every module given. Measured inside one run, so the machine's
    drift between runs does not enter it."""

    def __init__(self, modules):
        self.modules, self.seconds, self._start = modules, 0.0, 0.0

    def __enter__(self):
        self.handles = [m.register_forward_hook(self._begin) for m in self.modules]
        return self

    def arm(self):
        self.handles += [m.register_forward_hook(self._end) for m in self.modules]

    def _begin(self, *_):
        self._start = time.perf_counter()

    def _end(self, *_):
        self.seconds += time.perf_counter() - self._start

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
