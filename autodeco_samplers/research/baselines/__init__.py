"""Other adaptive decoding rules the heads are compared with (min-p, dynamic temperature, EDT,
top-nσ): :mod:`.numpy_baselines` and the batched :mod:`.torch_baselines`."""
