"""Streaming stages run side by side, with backpressure.

Every stage of a backup is an iterator of bytes chunks.  ``threaded`` runs a
stage in its own thread and hands its chunks over through a bounded queue,
so reading, compressing, encrypting and uploading overlap while memory stays
bounded by the queue sizes.  The first error of any stage reaches the
consumer; when the consumer stops early, the producer is told to stop.
"""

import queue
import threading
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

_DONE = object()


class _Failure:
    def __init__(self, exc):
        self.exc = exc


def threaded(chunks, maxsize=4, name='stage'):
    """Iterate ``chunks`` in a background thread, at most ``maxsize`` ahead."""
    handoff = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, re-raised
            put(_Failure(exc))
        finally:
            close = getattr(chunks, 'close', None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()


class Progress:
    """Counts the bytes of a stream; logs size and rate now and then."""

    def __init__(self, what, interval=10.0, total=None):
        self.what = what
        self.interval = interval
        self.total = total
        self.bytes = 0
        self.started = time.monotonic()
        self._last = self.started

    def count(self, chunks):
        for chunk in chunks:
            self.bytes += len(chunk)
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self.log()
            yield chunk

    @property
    def rate(self):
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return self.bytes / elapsed

    def log(self):
        done = '%.1f MiB' % (self.bytes / 2 ** 20)
        if self.total:
            done += ' of %.1f MiB' % (self.total / 2 ** 20)
        LOG.info("%s: %s at %.1f MiB/s", self.what, done,
                 self.rate / 2 ** 20)
