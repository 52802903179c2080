"""Keep the garbage collector's full passes off the objects a server loads once.

A full collection walks every object the interpreter tracks. With torch,
transformers and a model loaded that is about 450,000 objects and 0.1-0.2 s a
pass here, and a busy engine triggers one every few hundred milliseconds: on 64
concurrent searches of a tiny model (where the engine's own work is all there is),
full passes took 0.55 s of a 1.3 s run. ``gc.freeze()`` moves everything alive
now into a generation the collector never walks, as servers do once they have
loaded (vLLM's engine does the same); the searches' own objects are still
collected as before.

It is for processes that are there to serve (``rain serve``, its Ray replicas,
``rain batch``), not for a library call: an object frozen while alive is never
collected if it later becomes part of unreachable cycles, so a process that
drops and reloads models should not freeze between loads.
"""

from __future__ import annotations

import gc


def freeze_loaded_heap() -> None:
    """Collect what is garbage now, then freeze the rest out of full collections."""
    gc.collect()
    gc.freeze()
