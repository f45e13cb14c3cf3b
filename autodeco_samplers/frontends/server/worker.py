"""One engine worker: a bounded FIFO queue of requests, decoded one at a time.

A llama.cpp context (and, in this server, a transformers model) decodes one sequence at a
time, so every request becomes a :class:`Job` that waits in a first-in-first-out queue and is
run by a single worker thread. The rules:

* at most ``max_queue`` jobs *wait* (the running one not counted); one more is refused with
  503 ``server_busy`` at once, never queued;
* a job's ``cancel`` event (the client went away, or the shutdown deadline passed) makes a
  waiting job be skipped and a running one stop at its next token, freeing the engine;
* events go from the worker thread to the request's asyncio queue through
  ``loop.call_soon_threadsafe``: :class:`~autodeco_samplers.frontends.server.engines.TokenOut` (tagged
  with the choice index), :class:`ChoiceEnd`, :class:`JobFailed`, and finally :data:`DONE`.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional

from autodeco_samplers.frontends.server.engines import Engine, SequenceEnd, SequenceJob, TokenOut
from autodeco_samplers.frontends.server.errors import APIError, busy

__all__ = ["ChoiceEnd", "DONE", "EngineWorker", "Job", "JobFailed"]

DONE = object()
"""The last event of every job."""


@dataclass
class ChoiceEnd:
    choice: int
    end: SequenceEnd


@dataclass
class JobFailed:
    error: APIError


class Job:
    """One request: its sequences (one per choice), its event queue and its cancel flag."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sequences: List[SequenceJob]) -> None:
        self.loop = loop
        self.sequences = sequences
        self.events: "asyncio.Queue[Any]" = asyncio.Queue()
        self.cancel = threading.Event()
        self.cut = False  # cancelled by the shutdown deadline (not by the client)
        self.started = False

    def emit(self, event: Any) -> None:
        """Thread-safe: hand one event to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class EngineWorker:
    """The queue and the thread that runs :class:`Job` s on one :class:`Engine`."""

    def __init__(self, engine: Engine, max_queue: int = 64) -> None:
        self.engine = engine
        self.max_queue = int(max_queue)
        self._pending: Deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self.running: Optional[Job] = None
        self.counters: Dict[str, int] = {"served": 0, "cancelled": 0, "refused": 0, "failed": 0}
        self._thread = threading.Thread(target=self._loop, name="autodeco-engine", daemon=True)
        self._thread.start()

    # --- queue -------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue ``job``; raises 503 :class:`APIError` when ``max_queue`` jobs already wait."""
        with self._cond:
            if self._stop:
                raise busy("the server is shutting down", code="shutting_down")
            if len(self._pending) >= self.max_queue:
                self.counters["refused"] += 1
                raise busy(f"the server is busy: {len(self._pending)} requests are waiting (the queue holds "
                           f"{self.max_queue}); retry later")
            self._pending.append(job)
            self._cond.notify()

    def stats(self) -> Dict[str, Any]:
        with self._cond:
            return {"queued": len(self._pending), "running": int(self.running is not None),
                    "max_queue": self.max_queue, **self.counters}

    def cut_all(self) -> None:
        """The shutdown deadline: stop the running job at its next token and drop the waiting ones."""
        with self._cond:
            jobs = list(self._pending) + ([self.running] if self.running is not None else [])
            for job in jobs:
                job.cut = True
                job.cancel.set()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.cut_all()
        self._thread.join(timeout)

    # --- the worker thread ---------------------------------------------------------------
    def _next(self) -> Optional[Job]:
        with self._cond:
            while not self._pending and not self._stop:
                self._cond.wait()
            if not self._pending:
                return None
            job = self._pending.popleft()
            self.running = job
            return job

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                self._run(job)
            finally:
                with self._cond:
                    self.running = None
                job.emit(DONE)

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            self.counters["cancelled"] += 1
            return
        job.started = True
        for choice, seq in enumerate(job.sequences):
            def emit(tok: TokenOut, choice: int = choice) -> None:
                job.emit((choice, tok))

            try:
                end = self.engine.run(seq, emit, job.cancel)
            except APIError as exc:
                self.counters["failed"] += 1
                job.emit(JobFailed(exc))
                return
            except Exception as exc:  # an engine failure: answer this request, keep serving
                self.counters["failed"] += 1
                job.emit(JobFailed(APIError(500, f"the engine failed: {type(exc).__name__}: {exc}")))
                return
            job.emit(ChoiceEnd(choice, end))
            if end.finish_reason == "cancelled":
                self.counters["cancelled"] += 1
                return
        self.counters["served"] += 1


class Drain:
    """Shutdown bookkeeping: after SIGTERM, requests still running may finish until the
    deadline, then :meth:`EngineWorker.cut_all` ends them (streams get a last chunk and
    ``data: [DONE]``); new requests get 503 ``shutting_down``."""

    def __init__(self, worker: EngineWorker, timeout: float) -> None:
        self.worker = worker
        self.timeout = float(timeout)
        self.started_at: Optional[float] = None
        self._timer: Optional[threading.Timer] = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def begin(self) -> None:
        if self.started_at is not None:
            return
        self.started_at = time.monotonic()
        self._timer = threading.Timer(self.timeout, self.worker.cut_all)
        self._timer.daemon = True
        self._timer.start()

