"""What users run: the ``autodeco`` command line (:mod:`.cli`), the OpenAI-compatible local
server (:mod:`.server`), the checks of their inputs (:mod:`.validation`) and the JSON Schema of
the generation output (``schemas/``)."""
