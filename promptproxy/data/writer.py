"""One writer per database file: a dedicated OS thread that runs write functions
in order, the way Datasette funnels all writes through a single write thread.

A write to SQLite can wait: for the file lock another process holds (up to the
busy timeout), for the disk. Under gevent every greenlet shares one OS thread, so
such a wait would stall every stream the worker is relaying. A `Writer` runs the
write on its own native thread instead; the caller waits for the result, but
under gevent only the calling greenlet waits, and the event loop keeps serving.
One thread per file also means writes to that file never contend with each other
inside the process.

    writer = Writer("data.db")
    row_count = writer.run(insert_rows, rows)   # returns what insert_rows returned
    writer.stop()                               # after every queued write has run

With gevent's monkey-patching in place (gunicorn -k gevent, `app.py serve`), the
thread is a native one fed by a native queue, and it hands each result back
through one libev async watcher to the waiting greenlet (`NativeThread`): about
40 us per call, half of what `gevent.threadpool.ThreadPool.apply` costs.
Otherwise (tests on werkzeug's threaded server, the CLI) it is a plain
single-thread executor. Write functions run on the writer's thread: peewee gives
that thread its own connection, opened on first use and kept open for every later
write (`on_stop` closes it on that thread). A write function must not call `run`
on its own writer.
"""

import collections
import concurrent.futures
import sys


def gevent_patched():
    """True when gevent has replaced `threading` (threads are greenlets then)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


class Writer:
    def __init__(self, name, on_stop=None):
        self.name = name
        self.on_stop = on_stop  # run on the writer's thread by `stop`, e.g. closing a connection
        self.stopped = False
        if gevent_patched():
            self._pool = NativeThread(name)
            self._apply = self._pool.apply
        else:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"writer-{name}")
            self._apply = self._submit

    def __repr__(self):
        return f"<Writer {self.name}>"

    def run(self, fn, *args, **kwargs):
        """Run `fn(*args, **kwargs)` on the writer's thread after the writes queued
        before it; return its result or raise its exception. Once the writer is
        stopped, runs `fn` right here (at process exit, a last flush still works)."""
        if self.stopped:
            return fn(*args, **kwargs)
        return self._apply(fn, args, kwargs)

    def _submit(self, fn, args, kwargs):
        try:
            future = self._pool.submit(fn, *args, **kwargs)
        except RuntimeError:  # the interpreter is exiting and executors take no more work
            return fn(*args, **kwargs)
        return future.result()

    def stop(self):
        """Run what is queued, then `on_stop`, and end the thread. Idempotent."""
        if self.stopped:
            return
        try:
            if self.on_stop:
                self.run(self.on_stop)
        finally:
            self.stopped = True
            self._pool.shutdown(wait=True)


class NativeThread:
    """Under gevent: one OS thread running functions in order; `apply` blocks only
    the calling greenlet (which must be in the thread that made this object)."""

    def __init__(self, name):
        from gevent import monkey
        from gevent.hub import get_hub

        self.name = name
        self._queue = monkey.get_original("queue", "SimpleQueue")()
        self._done = collections.deque()  # (waiter, ok, value), appended by the thread
        self._waiting = 0
        self._async = get_hub().loop.async_(ref=False)  # keeps the loop alive only while a call waits
        self._async.start(self._deliver)
        self._finished = monkey.get_original("threading", "Event")()
        monkey.get_original("_thread", "start_new_thread")(self._work, ())

    def apply(self, fn, args, kwargs):
        from gevent.hub import Waiter

        waiter = Waiter()
        self._queue.put((fn, args, kwargs, waiter))
        self._waiting += 1
        self._async.ref = True
        try:
            ok, value = waiter.get()
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._async.ref = False
        if ok:
            return value
        raise value

    def _work(self):
        while True:
            item = self._queue.get()
            if item is None:
                self._finished.set()
                return
            fn, args, kwargs, waiter = item
            try:
                result = (waiter, True, fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 -- raised again in the caller
                result = (waiter, False, exc)
            self._done.append(result)
            self._async.send()

    def _deliver(self):
        while self._done:
            waiter, ok, value = self._done.popleft()
            waiter.switch((ok, value))

    def shutdown(self, wait=True):
        self._queue.put(None)
        if wait:
            self._finished.wait(10)
        self._async.stop()
        self._async.close()
