"""The model process: it holds the models, the app's UI process (gradio) never imports torch.

Why a second process: on 2 CPU cores, importing gradio (~3.5 s) and then torch + timm (~3.5 s) made
the app's cold start ~9 s. Started first, this process imports torch while the UI process imports
gradio, and start-up takes the longer of the two. It also keeps the web server up when running a
model kills its process (out of memory, a crash in a native kernel): the next call starts a new one.

``ModelWorker.call(name, model_dir, *args)`` runs one of ``CALLS`` on the model in ``model_dir``
(loaded once per process) and returns its result. ValueErrors (bad input, broken checkpoint) come
back as ValueErrors with the same message; anything else, a dead process included, as RuntimeError.
Calls run concurrently (the worker answers each in its own thread) and report progress back. Every
call has a deadline (``DEADLINES``): a process that does not answer in time (stopped, deadlocked,
swapping) is killed, its callers get a message, and the next call starts a new one.

Messages are pickled over a socket pair (``multiprocessing.connection``); both ends are this file.
UI → worker: ``(call_id, name, args)``. Worker → UI: ``(call_id, "progress", (fraction, desc))``
any number of times, then ``(call_id, "result", value)`` or ``(call_id, "error", (is_value_error, message))``.
"""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

#: Most calls one worker runs at once: the app serves two events plus one "Explain" at a time.
MAX_CONCURRENT = 4
#: Seconds a call may take, from sending it to its answer: a forward pass takes ~25 ms on 2 cores and
#: occlusion heatmaps a few seconds, so these mean a process that will not answer. A process that is
#: still starting (importing torch, loading its models) gets ``STARTUP_S`` more.
DEADLINES = {"load": 120.0, "run": 30.0, "explain": 180.0}
STARTUP_S = 120.0


@dataclass
class _Link:
    """One running worker process and the calls waiting for its answers."""

    proc: subprocess.Popen
    conn: Connection
    pending: dict[int, queue.SimpleQueue] = field(default_factory=dict)
    #: calls to send, in order; a thread sends them, so a process that stopped reading blocks no caller
    outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    ready: threading.Event = field(default_factory=threading.Event)  # set by its first message
    dead: bool = False


class ModelWorker:
    """The UI side: starts the model process on first use (or ``start()``), and again if it died."""

    def __init__(self, preload: list[str | os.PathLike] = (), deadlines: dict[str, float] | None = None):
        self._preload = [str(p) for p in preload]
        self._deadlines = {**DEADLINES, **(deadlines or {})}
        self._lock = threading.Lock()
        self._link: _Link | None = None
        self._ids = itertools.count()

    def start(self) -> None:
        """Start the process now (it imports torch and loads ``preload`` while the caller goes on)."""
        with self._lock:
            self._live_link()

    def call(self, name: str, model_dir: str | os.PathLike, *args: Any,
             progress: Callable[[float, str], None] | None = None) -> Any:
        answers: queue.SimpleQueue = queue.SimpleQueue()
        call_id = next(self._ids)
        with self._lock:
            link = self._live_link()
            link.pending[call_id] = answers
        limit = self._deadlines[name] + (0.0 if link.ready.is_set() else STARTUP_S)
        deadline = time.monotonic() + limit
        link.outbox.put((call_id, name, (str(model_dir), *args)))
        try:
            while True:
                try:
                    kind, value = answers.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    self._replace(link)
                    raise RuntimeError(f"The model did not answer within {limit:.0f} s, so it was restarted; "
                                       "please try again.") from None
                if kind == "progress":
                    if progress is not None:
                        progress(*value)
                    continue
                if kind == "result":
                    return value
                is_value_error, message = value
                raise (ValueError if is_value_error else RuntimeError)(message)
        finally:  # also when ``progress`` raises (a cancelled request): later messages are dropped
            link.pending.pop(call_id, None)

    def close(self) -> None:
        """Stop the process now (calls still running fail); the next call would start a new one."""
        with self._lock:
            link, self._link = self._link, None
        if link is not None:
            link.proc.terminate()
            try:
                link.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # stopped or hung: SIGTERM waits for it forever
                link.proc.kill()
                link.proc.wait()

    def _replace(self, link: _Link) -> None:
        """Kill a process that missed a deadline (its reader thread fails the other waiting calls) and
        start its replacement now, so it is ready by the time the user tries again."""
        with self._lock:
            link.dead = True
            link.proc.kill()
            if self._link is link:
                self._live_link()

    def pid(self) -> int | None:
        """The model process's id, None before it started (for tests and diagnostics)."""
        return self._link.proc.pid if self._link else None

    def _live_link(self) -> _Link:
        """The running process, started (again) if needed; called with ``self._lock`` held."""
        if self._link is None or self._link.dead or self._link.proc.poll() is not None:
            ours, theirs = Pipe()  # a duplex socket pair: the child inherits one end, we keep the other
            root = str(Path(__file__).resolve().parent.parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            # Its own session: Ctrl-C in a terminal interrupts the UI process only; this one exits
            # when the UI process is gone and its end of the socket closes, whatever ended it.
            proc = subprocess.Popen([sys.executable, "-m", "artattr.worker", str(theirs.fileno()), *self._preload],
                                    pass_fds=[theirs.fileno()], env=env, start_new_session=True)
            theirs.close()
            self._link = _Link(proc, ours)
            writer = threading.Thread(target=self._write, args=(self._link,), daemon=True, name="model-worker-writer")
            writer.start()
            threading.Thread(target=self._read, args=(self._link, writer), daemon=True, name="model-worker-reader").start()
        return self._link

    @staticmethod
    def _write(link: _Link) -> None:
        """Send the calls; ends when the process is gone (its reader thread answers the calls)."""
        while (message := link.outbox.get()) is not None:
            try:
                link.conn.send(message)
            except OSError:
                return

    def _read(self, link: _Link, writer: threading.Thread) -> None:
        """Route the worker's messages to the waiting calls; when it dies, fail those calls clearly."""
        while True:
            try:
                call_id, kind, value = link.conn.recv()
            except (EOFError, OSError):
                break
            link.ready.set()
            answers = link.pending.get(call_id)
            if answers is not None:
                if kind != "progress":
                    del link.pending[call_id]
                answers.put((kind, value))
        code = link.proc.wait()
        with self._lock:
            link.dead = True
            waiting, link.pending = list(link.pending.values()), {}
        message = (f"The model process stopped (exit code {code}) before answering; "
                   "try again: a new one starts with the next request.")
        for answers in waiting:
            answers.put(("error", (False, message)))
        link.outbox.put(None)
        writer.join()  # its send to the dead process has failed by now; then the socket can close
        link.conn.close()


# ---------------------------------------------------------------------------------------------------
# The worker side: ``python -m artattr.worker FD [MODEL_DIR ...]``.


def _load(predictor, progress):
    """Nothing more to do: loading happens before any call (and fails there for a broken checkpoint)."""


def _run(predictor, image, locate=True, *, progress):
    return predictor.run(image, locate=locate)


def _explain(predictor, image, method, task, target, progress):
    from . import explain

    return explain.explain(predictor, image, method, task, target=target, progress=progress)


#: What the UI process may ask for: name -> fn(predictor, *args, progress=callback).
CALLS: dict[str, Callable] = {"load": _load, "run": _run, "explain": _explain}


def serve(conn: Connection, preload: list[str]) -> None:
    """Answer calls until the UI process goes away (its end of the socket closes)."""
    import torch

    from .predictor import load

    # One thread per call: a 160 px forward gains little from a second thread, and on a busy 2-core
    # box (a Space, or CI) a thread pool that waits for a descheduled worker turned a 25 ms forward
    # into 700 ms. Parallelism comes from answering calls concurrently.
    torch.set_num_threads(1)
    predictors: dict[str, Any] = {}
    load_lock, send_lock = threading.Lock(), threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    def predictor(model_dir: str):
        with load_lock:
            if model_dir not in predictors:
                predictors[model_dir] = load(model_dir)
            return predictors[model_dir]

    def answer(call_id: int, name: str, args: tuple) -> None:
        try:
            def progress(fraction: float, desc: str) -> None:
                send((call_id, "progress", (fraction, desc)))

            send((call_id, "result", CALLS[name](predictor(args[0]), *args[1:], progress=progress)))
        except Exception as err:  # every call gets an answer; the UI decides how to show it
            send((call_id, "error", (isinstance(err, ValueError), str(err) or type(err).__name__)))

    def warm_up() -> None:
        """Load ``preload``, then say so: from then on a call's deadline covers only its own work."""
        try:
            for model_dir in preload:
                predictor(model_dir)
        finally:  # a broken model fails the calls that use it, with its message
            send((-1, "ready", None))

    with ThreadPoolExecutor(MAX_CONCURRENT, thread_name_prefix="model-call") as pool:
        pool.submit(warm_up)
        while True:
            try:
                call_id, name, args = conn.recv()
            except (EOFError, OSError):
                break
            pool.submit(answer, call_id, name, args)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), sys.argv[2:])
