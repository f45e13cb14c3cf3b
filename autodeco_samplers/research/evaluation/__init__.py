"""Evaluating decoding strategies: the toy task of the embedded model (:mod:`.toy_task`,
:mod:`.toy`) and the chat evaluation on a real model (:mod:`.chat`)."""
