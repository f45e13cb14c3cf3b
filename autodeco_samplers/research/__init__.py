"""Research code around the heads: training them (:mod:`.training`), the decoding baselines
they are compared with (:mod:`.baselines`) and the evaluation (:mod:`.evaluation`)."""
