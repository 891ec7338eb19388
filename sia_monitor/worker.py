"""Events produced in a worker thread, consumed as an iterator in the caller's thread.

Why one helper: `Monitor.stream` and `LiveVote.stream` both run a blocking producer (a generation, a vote) in
a thread and hand its events to the caller as they come, with the same three promises: an exception in the
worker is raised in the caller's thread; Ctrl-C stops the producer but still delivers what it made (then
raises KeyboardInterrupt); closing the iterator early stops the producer and waits for it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def stream_from_worker(produce: Callable[[Callable[[T], None]], object], stop: Callable[[], None],
                       name: str) -> Iterator[T]:
    """Run `produce(put)` in a daemon thread named `name` and yield what it puts; `stop()` asks it to end."""
    items: queue.Queue[object] = queue.Queue()
    done = object()

    def work() -> None:
        try:
            produce(items.put)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it in its own thread
            items.put(exc)
        finally:
            items.put(done)

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    interrupted = False
    try:
        while True:
            try:
                item = items.get()
            except KeyboardInterrupt:  # Ctrl-C: stop the producer, but still deliver what it made
                interrupted = True
                stop()
                continue
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop()
        worker.join()
    if interrupted:
        raise KeyboardInterrupt
