"""The core: the canonical AutoDeco rule and the step, engine-free.

* :mod:`.reference`: the rule in NumPy, the specification every other path is tested against;
  :mod:`.fast_nucleus` and :mod:`.fast_stats` are its proven-equal fast NumPy paths.
* :mod:`.torch_ops` and :mod:`.torch_nucleus`: the same rule in torch (sort-free, sync-free).
* :mod:`.step`: heads -> policy -> rule, one step API per array library.
* :mod:`.policy`: the deployment's decoding policy and request multipliers.
* :mod:`.speculative`: the exact verification rule for speculative decoding.
* :mod:`.interfaces`, :mod:`.errors`, :mod:`.text_stream`: the shared types, the error
  classes, stop strings and streamed text.

Nothing here imports an engine, the heads' checkpoint readers, or any layer above.
"""
