"""The worker pool, seen from the server: starting workers (the process itself: ``litkit.pool.processes``),
the READY handshake, pull-based dispatch, replacing workers that die, and stopping them.

Runs on the server's event-loop thread only. The queue lives here, not in the workers: a request is handed to a
worker only when that worker is free, so a request whose client left while queued is simply skipped and never
reaches user code. Each job's response pipe is the pool's, and only the pool closes it: the request's handler
reads it and says when it is done with the job (``release``, or ``cancel``; ``litkit.pool.jobs.Job``).

With ``max_concurrency`` above 1 (async APIs), a worker runs that many requests at once: it takes
a job while it holds fewer, each starts at once, and its ``DONE`` frames name the request they end.

With ``max_batch_size`` above 1, an idle worker gets a group of queued jobs, and a job may join a
running batch that takes joiners (``litkit.pool.batching``). What workers print, and their ``self.log()`` entries: ``litkit.pool.logs``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import pickle
import sys
import time
from typing import Any

from ..errors import LitkitError, WorkerStartError
from ..wire.protocol import Kind, encode_batch, encode_frame, encode_request
from .batching import Batcher
from .channels import ControlChannel, PipeReader
from .devices import Placement
from .jobs import Job, JobDropped, NoWorkers, QueueFull, WorkerProcess, fail, succeed
from .logs import LogEntries, OutputReaders, WorkerLog
from .processes import ExitWatch, describe_exit, has_exited, launch, reap

__all__ = ["WorkerPool"]

logger = logging.getLogger("litkit.pool")

# A worker that dies is replaced; one that keeps failing to start is retried with back-off, then left down.
MAX_START_ATTEMPTS = 5
RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 4.0)
# A busy worker of a non-streaming endpoint may hold this many requests beyond the one it runs, so
# it starts the next the moment it finishes instead of waiting a round trip through the server.
PREFETCH = 1
# After a worker exits, how long its stdout/stderr may stay open (held by a process it started).
OUTPUT_DRAIN_S = 0.5


class WorkerPool:
    """Spawns ``count`` workers for one API and feeds them requests, one at a time each."""

    def __init__(
        self,
        api_bytes: bytes,
        *,
        placements: list[Placement],
        stream: bool,
        max_queue: int,
        start_timeout: float,
        log: WorkerLog | None = None,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
        max_concurrency: int = 1,
        async_api: bool = False,
        spec: bytes | None = None,
        cancel_grace: float = 5.0,
        code_origins: dict[str, Any] | None = None,
    ) -> None:
        """``placements``: one per worker, its device (see ``litkit.pool.devices``). ``code_origins`` (``litkit.wire.sources``)
        lets a worker's tracebacks show the API's source lines. ``async_api``: the workers run every ``REQUEST`` the moment it
        arrives (``litkit.worker.async_loop``), so none is sent ahead of a free slot."""
        self._api_bytes = api_bytes
        self._spec_bytes = spec
        self._code_origins = code_origins
        self.log_entries = LogEntries()  # each self.log() in a worker; its on_log is the server's to set
        self._cancel_grace = cancel_grace
        self._stream = stream
        self._max_batch_size = max_batch_size
        self._batcher = Batcher(max_batch_size, batch_timeout, self._dispatch) if max_batch_size > 1 else None
        self._max_concurrency = max_concurrency
        # Streams are long: never queue behind one. Batches and concurrent requests start at once,
        # and so does a request sent ahead to an async worker: it would run beside the current one.
        self._prefetch = 0 if stream or max_batch_size > 1 or max_concurrency > 1 or async_api else PREFETCH
        self._capacity = max_concurrency + self._prefetch  # jobs a worker may hold: running, then waiting
        self._max_queue = max_queue
        self._start_timeout = start_timeout
        self.log = log if log is not None else WorkerLog()
        self.workers = [WorkerProcess(i, placement) for i, placement in enumerate(placements)]
        self._idle: list[WorkerProcess] = []
        self._queue: collections.deque[Job] = collections.deque()
        self._queued = 0
        self._stopping = False
        self._started = False  # every worker reported READY once
        self._background: set[asyncio.Task[Any]] = set()
        self._output = OutputReaders(self.log)

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn every worker and wait for each READY.

        Raises:
            WorkerStartError: a worker reported a failure, died, or was silent past ``start_timeout``.
        """
        readiness = [(worker, self._spawn(worker)) for worker in self.workers]
        deadline = time.monotonic() + self._start_timeout
        for worker, ready in readiness:
            try:
                await asyncio.wait_for(asyncio.shield(ready), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise WorkerStartError(
                    worker.id,
                    f"no READY within start_timeout={self._start_timeout:g}s; if setup() is slow "
                    "(e.g. loading a large model), pass a larger start_timeout to serve()",
                ) from None
        self._started = True

    def health(self) -> tuple[bool, str | None]:
        """(ok, reason): not ok while the first start is under way, while stopping, and once a worker was left down after
        failing to start again and again. A worker being replaced after a crash does not count: requests wait for it in the queue."""
        if self._stopping:
            return False, "the server is stopping"
        for worker in self.workers:
            if worker.given_up:
                return False, (
                    f"worker {worker.id} is down after {worker.failed_starts} failed starts in a row: "
                    f"{worker.last_error}; fix the cause and serve again"
                )
        if not self._started:
            return False, "workers are starting"
        return True, None

    async def stop(self) -> None:
        """Drop queued jobs, close every control socket, and make sure every process has exited."""
        self._stopping = True
        if self._batcher is not None:
            self._batcher.close()
        while self._queue:
            self._drop(self._queue.popleft(), JobDropped("the server is stopping"))
        for task in list(self._background):
            task.cancel()
        for worker in self.workers:
            if worker.control is not None:
                worker.control.close()
        await asyncio.gather(*(reap(w.process) for w in self.workers if w.process is not None))
        for worker in self.workers:
            worker.state = "stopped"  # not "dead": nothing went wrong
            if worker.exit_watch is not None:
                worker.exit_watch.close()
        await self._output.finish(OUTPUT_DRAIN_S)

    def snapshot(self) -> list[dict[str, Any]]:
        return [worker.snapshot() for worker in self.workers]

    # -- dispatch ---------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job; it goes to the first worker that is free.

        Raises:
            QueueFull: ``max_queue`` jobs are already waiting.
            NoWorkers: every worker is down for good.
        """
        if all(worker.given_up for worker in self.workers):
            raise NoWorkers(self.health()[1] or "every worker is down")
        if self._queued >= self._max_queue:
            raise QueueFull(
                f"the queue already holds max_queue={self._max_queue} requests; retry later, "
                "or serve with more workers or a larger max_queue"
            )
        self._queue.append(job)
        self._queued += 1
        if self._max_batch_size > 1:
            job.queued_at = asyncio.get_running_loop().time()
        self._dispatch()

    def release(self, job: Job) -> None:
        """The handler is done with ``job``'s answer (written, or cut short after a ``cancel``): its pipe is closed if still
        open, arming no ``cancel_grace`` timer (one a ``cancel`` armed stays armed). One not started is cancelled."""
        if not job.started:
            self.cancel(job)  # dropped, and its pipe (if a busy worker holds it ahead) closed
        job.close_pipe()  # a worker still writing (an answer cut short by an error) stops at its next write

    def cancel(self, job: Job) -> None:
        """Cancel a job: a queued one is dropped and never runs; one handed to a busy worker is dropped and its pipe closed, so the
        worker skips it; a running one has its pipe closed, which the worker notices at its next write (or ``litkit.cancelled()``
        check). A worker still on a started request ``cancel_grace`` seconds later (a hook that neither yields nor checks
        ``litkit.cancelled()``) is killed and replaced; in a batch, once every request of it is cancelled (the others keep it)."""
        self._drop(job, JobDropped(f"request {job.id} was cancelled while queued"))

    def _drop(self, job: Job, error: LitkitError) -> None:
        if job.dropped:
            return
        if job.started:
            if job.pipe is not None and not job.pipe.closed():
                job.close_pipe()
                job.grace_timer = asyncio.get_running_loop().call_later(self._cancel_grace, self._kill_if_still_running, job)
            return
        job.dropped = True
        self._queued -= 1
        job.close_pipe()  # handed to a busy worker: it skips a request whose pipe is closed
        fail(job.assigned, error)

    def _kill_if_still_running(self, job: Job) -> None:
        job.grace_timer = None
        worker = job.worker
        process = worker.process if worker is not None else None
        if self._stopping or worker is None or job not in worker.jobs or process is None or has_exited(process):
            return
        if self._max_batch_size > 1 and any(not other.pipe.closed() for other in worker.jobs if other.pipe is not None):
            # A batch still streaming to other clients drops this request at its next step (issue 27).
            return
        logger.warning(
            "worker %d (pid %d) still runs request %s %gs after it was cancelled (cancel_grace); "
            "killing it. A hook that loops for long should check litkit.cancelled()",
            worker.id, process.pid, job.id, self._cancel_grace,
        )
        worker.killed += 1
        process.kill()  # Popen.kill: the process is not reaped yet, so its pid cannot be reused

    def _dispatch(self) -> None:
        if self._batcher is not None:
            self._dispatch_batches(self._batcher)
            return
        queue = self._queue
        while queue:
            if queue[0].dropped:
                queue.popleft()
                continue
            worker = self._free_worker()
            if worker is None or not self._hand_over(worker, [queue[0]]):
                return
            queue.popleft()

    def _free_worker(self) -> WorkerProcess | None:
        """An idle worker (the most recently freed: its caches are warm), else a busy one with room:
        a free slot (``max_concurrency``) or room to hold a request ahead (``PREFETCH``)."""
        if self._idle:
            return self._idle[-1]
        return next((w for w in self.workers if w.state == "busy" and len(w.jobs) < self._capacity and w.control is not None and not w.control.writing), None)

    def _hand_over(self, worker: WorkerProcess, jobs: list[Job], join: bool = False) -> bool:
        """Send ``jobs`` to ``worker``, one ``REQUEST`` (or, batching, one ``BATCH`` frame; ``join``: one
        ``JOIN``, to its running batch), each with the write end of a fresh response pipe; False if they cannot go now."""
        control = worker.control
        if control is None:
            raise RuntimeError(f"worker {worker.id} is {worker.state} without a control socket")
        batching = self._batcher is not None
        pipes = [os.pipe() for _ in jobs]
        kind = Kind.JOIN if join else Kind.REQUEST  # a JOIN carries one request, as a REQUEST does
        head, body = encode_batch([(job.key, job.body) for job in jobs]) if batching and not join else encode_request(jobs[0].key, jobs[0].body, kind)
        try:
            sent = control.send([head, body], [write_fd for _, write_fd in pipes])
        except OSError:
            sent = False  # the worker is dying; its channel reports the exit and it is replaced
            if worker in self._idle:
                self._idle.remove(worker)
        finally:
            for _, write_fd in pipes:
                os.close(write_fd)  # the worker holds its own copies now (or never will)
        if not sent:
            for read_fd, _ in pipes:
                os.close(read_fd)
            return False
        if worker.state == "idle":
            self._idle.remove(worker)
            worker.state = "busy"
        for job, (read_fd, _) in zip(jobs, pipes):
            job.worker = worker
            job.read_fd = read_fd
            worker.jobs.append(job)
            if batching or len(worker.jobs) <= self._max_concurrency:  # a batch runs whole; else a free slot starts it
                self._start_job(job)
        return True

    def _start_job(self, job: Job) -> None:
        """The worker has reached ``job``: hand its response pipe to the request's handler."""
        if job.read_fd is None:
            raise RuntimeError(f"request {job.id} has no response pipe to start with")
        job.pipe = PipeReader(job.read_fd)
        job.read_fd = None
        self._queued -= 1
        job.assigned.set_result(job.pipe)

    def _dispatch_batches(self, batcher: Batcher) -> None:
        """Give each idle worker a group of jobs; with none idle, a job joins a running batch with room (``litkit.pool.batching``)."""
        while self._idle and self._queued:
            group = batcher.next_group(self._queue, self._queued)
            if group is None:
                return
            if not self._hand_over(self._idle[-1], group):
                self._queue.extendleft(reversed(group))
                return
        while self._queued and not self._idle:
            worker = batcher.batch_with_room(self.workers, self._queue)
            if worker is None or not self._hand_over(worker, [self._queue[0]], join=True):
                return
            self._queue.popleft()

    def _on_group_done(self, worker: WorkerProcess, payload: bytes) -> None:
        """DONE from a batching or concurrent worker: a whole batch ended, or the named request."""
        if self._batcher is not None:
            done = self._batcher.ended(worker, payload)
        else:
            key = payload.decode()  # the job's key, never the client's X-Request-ID: that may repeat
            done = [next((job for job in worker.jobs if job.key == key), worker.jobs[0])]
            worker.jobs.remove(done[0])
        for job in done:
            job.ended()
        worker.handled += len(done)
        if not worker.jobs:
            worker.state = "idle"
            self._idle.append(worker)
        self._dispatch()

    # -- one worker -------------------------------------------------------------------------------

    def _spawn(self, worker: WorkerProcess) -> asyncio.Future[None]:
        """Start a fresh interpreter for ``worker`` and send it INIT; return its READY future."""
        worker.process, server_end = launch(worker.id, worker.placement)
        self._output.follow(worker.id, worker.process)
        worker.state = "starting"
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        worker.ready = ready
        control = worker.control = ControlChannel(
            server_end,
            lambda kind, payload: self._on_control_message(worker, kind, payload),
            lambda: self._on_control_closed(worker, control),
        )
        if worker.exit_watch is not None:
            worker.exit_watch.close()
        # The process's own exit, not only the socket's end of file: a process the worker forked
        # may hold a copy of the socket, and then no end of file ever comes.
        worker.exit_watch = ExitWatch(worker.process, lambda: self._on_process_exit(worker, control))
        init = {
            "sys_path": list(sys.path),
            "api": self._api_bytes,
            "stream": self._stream,
            "device": worker.placement.device,
            "max_batch_size": self._max_batch_size,
            "spec": self._spec_bytes,
            "code_origins": self._code_origins,
        }
        control.send([encode_frame(Kind.INIT, pickle.dumps(init))])
        return ready

    def _on_process_exit(self, worker: WorkerProcess, control: ControlChannel) -> None:
        if not control.closed():  # no end of file came: a descendant holds the worker's end
            control.close()
            self._on_control_closed(worker, control)

    def _on_control_closed(self, worker: WorkerProcess, control: ControlChannel) -> None:
        if control is worker.control:  # not the old channel of a replaced process
            self._run_in_background(self._on_worker_exit(worker))

    def _on_control_message(self, worker: WorkerProcess, kind: Kind, payload: bytes) -> None:
        if self._batcher is not None and kind in (Kind.READY, Kind.LEFT):
            self._batcher.heard(worker, kind, payload)  # which workers' batches take joiners, and which have room
        if kind == Kind.READY:
            worker.state = "idle"
            worker.failed_starts = 0
            succeed(worker.ready)
            self._idle.append(worker)
            self._dispatch()
        elif kind == Kind.DONE:
            if not worker.jobs:
                logger.error("worker %d reported DONE without a request; ignoring it", worker.id)
                return
            if self._max_batch_size > 1 or self._max_concurrency > 1:
                self._on_group_done(worker, payload)
                return
            done = worker.jobs.popleft()
            done.ended()
            if done.started:
                worker.handled += 1
            if worker.jobs:
                after = worker.jobs[0]
                if not after.dropped:  # a dropped one the worker skips; its DONE comes next
                    self._start_job(after)
            else:
                worker.state = "idle"
                self._idle.append(worker)
            self._dispatch()
        elif kind == Kind.LOG:
            self.log_entries.deliver(worker.id, payload)
        elif kind == Kind.LEFT and self._batcher is not None:
            self._dispatch()
        elif kind == Kind.START_FAILED:
            report = json.loads(payload)
            worker.last_error = report["reason"]
            fail(worker.ready, WorkerStartError(worker.id, report["reason"], report["traceback"]))
        else:
            logger.error("worker %d sent an unexpected %s message; ignoring it", worker.id, kind.name)

    async def _on_worker_exit(self, worker: WorkerProcess) -> None:
        was_starting = worker.state == "starting"
        worker.state = "dead"
        if worker in self._idle:
            self._idle.remove(worker)
        # A started request's pipe reaches end-of-file, and its handler reports the death; the ones
        # the worker had not reached yet go back to the front of the queue, untouched.
        waiting = [job for job in worker.jobs if not job.started]
        for job in worker.jobs:
            job.ended()
        worker.jobs.clear()
        for job in reversed(waiting):
            job.close_pipe()
            job.worker = None
            if not job.dropped:
                self._queue.appendleft(job)
        self._dispatch()
        code = await reap(worker.process)
        how = describe_exit(code)
        if not worker.last_error or not was_starting:
            worker.last_error = f"process {worker.pid} {how}"
        fail(worker.ready, WorkerStartError(worker.id, f"the worker process {how} before it was ready"))
        if self._stopping:
            return
        if was_starting:
            worker.failed_starts += 1
            if worker.failed_starts >= MAX_START_ATTEMPTS:
                logger.error("worker %d failed to start %d times in a row; leaving it down: %s", worker.id, worker.failed_starts, worker.last_error)
                worker.given_up = True
                self._fail_queue_if_no_worker_left()
                return
        else:
            logger.warning("worker %d (pid %d) %s; starting a replacement", worker.id, worker.pid, how)
        await asyncio.sleep(RESTART_BACKOFF_S[min(worker.failed_starts, len(RESTART_BACKOFF_S) - 1)])
        if self._stopping:
            return
        worker.restarts += 1
        try:
            self._spawn(worker)
        except WorkerStartError as error:
            worker.last_error = error.reason
            logger.error("%s", error)

    def _fail_queue_if_no_worker_left(self) -> None:
        if all(worker.given_up for worker in self.workers):
            error = NoWorkers(self.health()[1] or "every worker is down")
            while self._queue:
                self._drop(self._queue.popleft(), error)

    def _run_in_background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

