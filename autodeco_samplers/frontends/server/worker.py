"""The engine worker: a bounded FIFO queue of requests and the scheduler of the engine's slots.

Every request becomes a :class:`Job` (one sequence per choice). One worker thread owns the
engine's :class:`~autodeco_samplers.frontends.server.engines.Slots` (``engine.parallel`` of them,
``--parallel``) and loops: admit, cancel, step. The rules:

* **admission, first in first out**: whenever a slot is free, the next sequence of the oldest
  job that has one waiting joins it (a job's choices join in order; a later job waits until
  every choice of the earlier ones has joined);
* **the queue**: at most ``max_queue`` jobs *wait* (no sequence joined yet; jobs that run are
  not counted); one more is refused with 503 ``server_busy`` at once, never queued;
* **one step** decodes one token for every active sequence (the engine's batched decode);
  sequences join and leave between steps, and a finished sequence frees its slot at once;
* a job's ``cancel`` event (the client went away, or the shutdown deadline passed) makes a
  waiting job be skipped and frees the slots of a running one before the next step;
* a failure of one sequence (400 from its join, or the core step refusing its row) answers its
  own job and leaves the others running; a failure of the batched decode itself answers every
  job that had a sequence in it (500) and the worker keeps serving;
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
from typing import Any, Deque, Dict, List, Optional, Tuple

from autodeco_samplers.frontends.server.engines import Engine, SequenceEnd, SequenceJob, Slots, TokenOut
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
        # the scheduler's bookkeeping (worker thread only)
        self.joined = 0  # sequences that have joined a slot
        self.ended = 0  # sequences that have ended
        self.active = 0  # sequences in a slot now
        self.failed = False

    def emit(self, event: Any) -> None:
        """Thread-safe: hand one event to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class EngineWorker:
    """The queue and the thread that schedules :class:`Job` s on one engine's slots."""

    def __init__(self, engine: Engine, max_queue: int = 64, parallel: Optional[int] = None) -> None:
        self.engine = engine
        self.max_queue = int(max_queue)
        self.parallel = int(parallel if parallel is not None else getattr(engine, "parallel", 1))
        self._pending: Deque[Job] = collections.deque()  # jobs with sequences still to join, oldest first
        self._running: List[Job] = []  # jobs with a joined sequence, not finished
        self._cond = threading.Condition()
        self._stop = False
        self._slots: Slots = engine.slots(self.parallel)  # here: a failure stops the server's start
        self._owner: Dict[int, Tuple[Job, int]] = {}  # slot -> (job, choice)
        self.peak = 0  # the most sequences that were ever in slots at once
        self.counters: Dict[str, int] = {"served": 0, "cancelled": 0, "refused": 0, "failed": 0}
        self._thread = threading.Thread(target=self._loop, name="autodeco-engine", daemon=True)
        self._thread.start()

    @property
    def running(self) -> Optional[Job]:
        """The oldest running job (``None`` when none runs)."""
        with self._cond:
            return self._running[0] if self._running else None

    # --- queue -------------------------------------------------------------------------
    def _waiting(self) -> int:
        return sum(1 for job in self._pending if not job.started)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises 503 :class:`APIError` when ``max_queue`` jobs already wait."""
        with self._cond:
            if self._stop:
                raise busy("the server is shutting down", code="shutting_down")
            waiting = self._waiting()
            if waiting >= self.max_queue:
                self.counters["refused"] += 1
                raise busy(f"the server is busy: {waiting} requests are waiting (the queue holds "
                           f"{self.max_queue}); retry later")
            self._pending.append(job)
            self._cond.notify()

    def stats(self) -> Dict[str, Any]:
        with self._cond:
            return {"queued": self._waiting(), "running": len(self._running), "max_queue": self.max_queue,
                    "parallel": self.parallel, "active_sequences": len(self._owner),
                    "peak_active_sequences": self.peak, **self.counters}

    def cut_all(self) -> None:
        """The shutdown deadline: stop the running jobs at their next token and drop the waiting ones."""
        with self._cond:
            for job in list(self._pending) + list(self._running):
                job.cut = True
                job.cancel.set()
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.cut_all()
        self._thread.join(timeout)

    # --- the worker thread ---------------------------------------------------------------
    def _finish(self, job: Job) -> None:
        """Count ``job`` and send its last event (called once per job, lock held)."""
        if job in self._running:
            self._running.remove(job)
        if job.failed:
            self.counters["failed"] += 1
        elif job.cancel.is_set() and job.ended < len(job.sequences):
            self.counters["cancelled"] += 1
        elif job.cancel.is_set() and not job.started:
            self.counters["cancelled"] += 1
        else:
            self.counters["served"] += 1
        job.emit(DONE)

    def _settle(self, job: Job) -> None:
        """Finish ``job`` if nothing of it runs or will run (lock held)."""
        if job.active:
            return
        stopped = job.cancel.is_set() or job.failed
        if stopped or job.ended == len(job.sequences):
            if job in self._pending:
                self._pending.remove(job)
            self._finish(job)

    def _fail(self, job: Job, error: APIError) -> None:
        """Answer ``job`` with ``error`` and free its other slots (lock held)."""
        if job.failed:
            return
        job.failed = True
        job.emit(JobFailed(error))
        for slot, (owner, _) in list(self._owner.items()):
            if owner is job:
                self._slots.leave(slot)
                del self._owner[slot]
                job.active -= 1

    def _pick(self) -> List[Tuple[Job, int]]:
        """The sequences that join the free slots now, first in first out (lock held);
        cancelled waiting jobs are dropped."""
        picked: List[Tuple[Job, int]] = []
        while self._pending and len(self._owner) + len(picked) < self.parallel:
            job = self._pending[0]
            if job.cancel.is_set() or job.failed:
                self._pending.popleft()
                if job.active == 0 and not any(j is job for j, _ in picked):
                    self._settle(job)
                continue
            choice = job.joined
            job.joined += 1
            job.active += 1  # reserved: the job cannot finish before its join is done
            if job.joined == len(job.sequences):
                self._pending.popleft()
            if not job.started:
                job.started = True
                self._running.append(job)
            picked.append((job, choice))
        return picked

    def _admit(self) -> None:
        """Join the picked sequences (the engine's join may run a prefill: outside the lock)."""
        with self._cond:
            picked = self._pick()
        for job, choice in picked:
            slot = error = None
            try:
                slot = self._slots.join(job.sequences[choice])
            except APIError as exc:
                error = exc
            except Exception as exc:  # an engine failure on this sequence: answer it, keep serving
                error = APIError(500, f"the engine failed: {type(exc).__name__}: {exc}")
            with self._cond:
                job.active -= 1
                if error is not None:
                    self._fail(job, error)
                    self._settle(job)
                else:
                    self._owner[slot] = (job, choice)
                    job.active += 1
                    self.peak = max(self.peak, len(self._owner))

    def _cancel_running(self) -> None:
        """Free the slots of cancelled jobs and drop cancelled waiting ones (lock held)."""
        for job in list(self._pending):
            if job.cancel.is_set() and not job.started:
                self._pending.remove(job)
                self._finish(job)
        for slot, (job, choice) in list(self._owner.items()):
            if job.cancel.is_set():
                end = self._slots.leave(slot)
                del self._owner[slot]
                job.active -= 1
                job.emit(ChoiceEnd(choice, end))
                self._settle(job)

    def _deliver(self, outs: List[Any]) -> None:
        for slot, token, end, error in outs:
            owner = self._owner.get(slot)
            if owner is None:
                continue
            job, choice = owner
            if error is not None:
                del self._owner[slot]
                job.active -= 1
                self._fail(job, error)
                self._settle(job)
                continue
            if token is not None:
                job.emit((choice, token))
            if end is not None:
                del self._owner[slot]
                job.active -= 1
                job.ended += 1
                job.emit(ChoiceEnd(choice, end))
                self._settle(job)

    def _step_failed(self, exc: Exception) -> None:
        """The batched decode failed: every job with a sequence in it gets a 500 (lock held)."""
        error = APIError(500, f"the engine failed: {type(exc).__name__}: {exc}")
        for job in {job for job, _ in self._owner.values()}:
            self._fail(job, error)
        for slot in list(self._owner):  # anything _fail left (defensive)
            self._slots.leave(slot)
            self._owner.pop(slot)
        for job in list(self._running):
            self._settle(job)

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cancel_running()
                self._admit()
                with self._cond:
                    if not self._owner:
                        if self._pending and not self._stop:
                            continue  # a failed join freed its slot: admit again
                        if self._stop and not self._pending:
                            return
                        self._cond.wait(0.5 if self._stop else None)
                        continue
                try:
                    outs = self._slots.step()
                except Exception as exc:
                    with self._cond:
                        self._step_failed(exc)
                    continue
                with self._cond:
                    self._deliver(outs)
        finally:
            with self._cond:
                for job in list(self._running) + list(self._pending):
                    job.cancel.set()
                self._cancel_running()
                for job in list(self._pending):
                    self._pending.remove(job)
                    if job not in self._running:
                        self._finish(job)
                for job in list(self._running):
                    self._settle(job)
            self._slots.close()


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

