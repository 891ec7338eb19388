"""The one worker that runs the model for every request, and the bounded line of requests waiting for it.

Why one worker: the model is one set of weights on one device, and a monitored generation already fills the
CPU. Requests that arrive together and can share a generation (same decoding settings and monitor; see
`Generation.batch_key`) run as one batch, each request a row: on a CPU or a GPU, a batch of 8 costs far less
than 8 generations in turn. The rest take turns, first come, first served.

The line is bounded: a request that finds `max_waiting` requests already waiting is refused at once (503
with Retry-After) rather than left to time out. A request whose client goes away is cancelled: if it is
waiting it leaves the line at once, if it is running its row stops within a token (the others go on), so no
thread, queue entry or cache outlives it.

Events cross from the worker thread to the server's event loop through `loop.call_soon_threadsafe`, so the
loop never blocks on the model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from sia_monitor.serve.protocol import RequestError

_END = object()


@dataclass
class Job:
    """One request's work, waiting or running: `payload` is what the engine's runner needs (a `Generation`),
    `key` says which other jobs it may be batched with (None: it runs alone)."""

    payload: Any
    loop: asyncio.AbstractEventLoop
    key: Hashable | None = None
    items: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    _on_cancel: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, item: Any) -> None:
        """From the worker thread: hand an item to the request's handler on the event loop."""
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)
        except RuntimeError:  # the loop is closed (server shutting down): nobody is listening
            self.cancel()

    def cancel(self) -> None:
        """From any thread: stop this job (a waiting job is skipped, a running one stops within a token)."""
        with self._lock:
            self.cancelled.set()
            callbacks = list(self._on_cancel)
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the job is cancelled (at once if it already is); the runner registers the
        running generation's (or row's) cancel here."""
        with self._lock:
            if not self.cancelled.is_set():
                self._on_cancel.append(callback)
                return
        callback()

    async def results(self) -> AsyncIterator[Any]:
        """The job's items as they come; re-raises the worker's exception; ends when the work ends."""
        while True:
            item = await self.items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


Runner = Callable[[list[Job]], None]


class ServingEngine:
    """Runs jobs in one worker thread, up to `max_batch` compatible ones together (`runner(jobs)` runs them);
    at most `max_waiting` wait behind them.

    `batch_window_s`: when the worker takes a job that could share a batch, it waits this long for
    companions first, so requests sent together (a chat app's users, a benchmark's clients) meet in one batch
    even though the first of them reaches an idle worker alone. A fraction of one token's time.
    """

    def __init__(self, runner: Runner, max_batch: int = 8, max_waiting: int = 32, retry_after_s: int = 5,
                 batch_window_s: float = 0.05) -> None:
        if max_batch < 1 or max_waiting < 0:
            raise ValueError("max_batch must be at least 1 and max_waiting at least 0")
        self.runner = runner
        self.max_batch, self.max_waiting = max_batch, max_waiting
        self.retry_after_s, self.batch_window_s = retry_after_s, batch_window_s
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="sia-monitor-serve", daemon=True)
        self._thread.start()

    # -- admission ------------------------------------------------------------------------------------------
    def submit(self, payload: Any, key: Hashable | None = None) -> Job:
        """Admit a job, or refuse it with 503 at once when the line is full."""
        job = Job(payload, asyncio.get_running_loop(), key)
        with self._cond:
            if self._closed:
                raise RequestError("The server is shutting down.", status=503, kind="server_error",
                                   code="shutting_down")
            if len(self._waiting) >= self.max_waiting and (self._running or self._waiting):
                raise RequestError(
                    f"The server is busy ({len(self._running)} requests running, {len(self._waiting)} waiting); "
                    "retry shortly.", status=503, kind="server_error", code="server_busy",
                    headers={"Retry-After": str(self.retry_after_s)})
            self._waiting.append(job)
            self._cond.notify()
        job.on_cancel(lambda: self._withdraw(job))
        return job

    def _withdraw(self, job: Job) -> None:
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                job.put(_END)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    # -- the worker -----------------------------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        """The next batch: the first waiting job, and the waiting jobs that can share its generation."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._waiting[0]
            if first.key is not None and self.max_batch > 1:
                deadline = time.monotonic() + self.batch_window_s
                while (not self._closed and sum(job.key == first.key for job in self._waiting) < self.max_batch
                       and (left := deadline - time.monotonic()) > 0):
                    self._cond.wait(left)
                if self._closed:
                    return None
            batch = [job for job in self._waiting if job is self._waiting[0] or
                     (first.key is not None and job.key == first.key)][: self.max_batch]
            for job in batch:
                self._waiting.remove(job)
            self._running = batch
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            live = [job for job in batch if not job.cancelled.is_set()]
            try:
                if live:
                    self.runner(live)
            except BaseException as exc:  # noqa: BLE001 - handed to the requests' handlers, which answer 500
                for job in live:
                    job.put(exc)
            finally:
                with self._cond:
                    self._running = []
                for job in batch:
                    job.put(_END)

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, cancel the waiting and the running ones, and wait for the worker to end."""
        with self._cond:
            self._closed = True
            jobs = list(self._waiting) + self._running
            self._cond.notify_all()
        for job in jobs:
            job.cancel()
        self._thread.join(timeout)
