"""Both stages on one machine: ItemGen worker threads and one ItemLoad batcher over local queues.

The workers call the same cores as the Lambdas (``item_gen.core.generate`` and
``item_load.core.BatchLoader``); only the queue underneath differs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ingest_common.errors import PermanentError, TransientError
from item_gen.core import Runner, generate
from item_gen.models import CollectionRequest, parse_request
from item_gen.settings import GenSettings
from item_gen.warm import runner_for
from item_load.core import BatchLoader, paused_gc
from item_load.errors import DatabaseUnavailable
from item_load.fetch import local_fetcher
from item_load.messages import documents_from_message
from stactools_ingest.inputs import InputProblem, InputRecord, classify, message_id
from stactools_ingest.queue import GEN, LOAD, LocalQueues, Message
from stactools_ingest.target import connect

logger = logging.getLogger(__name__)


@dataclass
class Counters:
    """Live progress, shared by the worker threads."""

    requests_done: int = 0
    requests_failed: int = 0
    items_loaded: int = 0
    collections_loaded: int = 0
    load_failed: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass
class RunSummary:
    """What ``stactools-ingest run`` prints at the end (``--json``: one object)."""

    requests: int
    documents: int
    succeeded: int
    failed: int
    items_loaded: int
    collections_loaded: int
    dead_letters: int
    input_errors: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Enqueued:
    """Ids of this run's inputs, so the summary speaks about them and not the whole store."""

    gen_ids: list[str] = field(default_factory=list)
    load_ids: list[str] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    new: int = 0


class LocalPipeline:
    """Enqueue inputs, then run the workers until both queues are drained."""

    def __init__(
        self,
        dsn: str,
        gen_workers: int = 2,
        batch_size: int = 1000,
        batch_window: float = 0.5,
        visibility_timeout: float = 600.0,
        max_receives: int = 5,
        gen_settings: GenSettings | None = None,
        runner: Runner | None = None,
        create_collections_if_missing: bool = False,
    ) -> None:
        self.dsn = dsn
        self.gen_workers = gen_workers
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.visibility_timeout = visibility_timeout
        self.max_receives = max_receives
        self.gen_settings = gen_settings or GenSettings()
        self.runner = runner or runner_for(self.gen_settings)
        self.create_collections_if_missing = create_collections_if_missing
        self.counters = Counters()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []

    def queues(self) -> LocalQueues:
        """A queue handle on its own connection (one per thread)."""
        return LocalQueues(connect(self.dsn), self.visibility_timeout, self.max_receives)

    # -- input -------------------------------------------------------------------------------

    def enqueue(self, records: Iterable[InputRecord | InputProblem], chunk: int = 2000) -> Enqueued:
        """Put every usable input on its queue; ids come from content, so repeats are no-ops."""
        out = Enqueued()
        queues = self.queues()
        rows: list[tuple[str, str, Any, str | None, int]] = []
        seen: set[tuple[str, str]] = set()

        def flush() -> None:
            if rows:
                out.new += queues.send_many(rows)
                rows.clear()

        for record in records:
            if isinstance(record, InputProblem):
                out.problems.append(record)
                continue
            kind = classify(record)
            if isinstance(kind, InputProblem):
                out.problems.append(kind)
                continue
            queue, priority = kind
            mid = message_id(record.obj)
            if (queue, mid) in seen:  # the same object twice in the input is one message
                continue
            seen.add((queue, mid))
            (out.gen_ids if queue == GEN else out.load_ids).append(mid)
            rows.append((queue, mid, record.obj, record.source, priority))
            if len(rows) >= chunk:
                flush()
        flush()
        queues.conn.close()
        return out

    # -- workers -----------------------------------------------------------------------------

    def _gen_worker(self) -> None:
        queues = self.queues()
        try:
            while not self._stop.is_set():
                messages = queues.receive(GEN, 1)
                if not messages:
                    self._stop.wait(0.2)
                    continue
                self._generate_one(queues, messages[0])
        finally:
            queues.conn.close()

    def _generate_one(self, queues: LocalQueues, msg: Message) -> None:
        try:
            request = parse_request(msg.body)
            doc = generate(request, self.gen_settings, self.runner)
        except Exception as e:
            self._failed(queues, msg, str(e), "requests_failed")
            return
        priority = 0 if isinstance(request, CollectionRequest) else 1
        with queues.conn.transaction():
            if not queues.ack([msg]):
                return  # the lease expired and another worker holds the request now
            queues.send_many([(LOAD, f"gen:{msg.id}", doc, msg.source, priority)])
        self.counters.add(requests_done=1)

    def _failed(self, queues: LocalQueues, msg: Message, reason: str, counter: str) -> None:
        dead = queues.fail(msg, reason)
        logger.warning(
            "%s message %s from %s failed (receive %d): %s",
            msg.queue,
            msg.id,
            msg.source,
            msg.receive_count,
            reason,
        )
        self.counters.add(**{counter: 1} if dead else {"retries": 1})

    def _load_worker(self) -> None:
        queues = self.queues()
        try:
            while not self._stop.is_set():
                # The cyclic GC would walk every leased message body; a round frees its own.
                with paused_gc():
                    worked = self._load_round(queues)
                if not worked:
                    self._stop.wait(0.2)
        finally:
            queues.conn.close()

    def _load_round(self, queues: LocalQueues) -> bool:
        """Lease one batch and load it; False when there was nothing to lease."""
        messages = queues.receive(LOAD, self.batch_size, block_items_on_collections=True)
        if messages and len(messages) < self.batch_size and queues.pending()[GEN]:
            # Generation is still producing: wait a moment to fill a bigger batch.
            self._stop.wait(self.batch_window)
            messages += queues.receive(
                LOAD, self.batch_size - len(messages), block_items_on_collections=True
            )
        if not messages:
            return False
        self._load_batch(queues, messages)
        return True

    def _load_batch(self, queues: LocalQueues, messages: list[Message]) -> None:
        docs, parsed = [], []
        for msg in messages:
            try:
                docs += documents_from_message(
                    msg.body, msg.id, msg.created_at.timestamp(), local_fetcher()
                )
                parsed.append(msg)
            except (PermanentError, TransientError) as e:
                self._failed(queues, msg, str(e), "load_failed")
        try:
            outcome = BatchLoader(queues.conn, self.create_collections_if_missing).load(docs)
        except DatabaseUnavailable as e:
            for msg in parsed:
                self._failed(queues, msg, str(e), "load_failed")
            return
        done = [m for m in parsed if m.id not in outcome.failures]
        queues.ack(done)
        for msg in parsed:
            if msg.id in outcome.failures:
                self._failed(queues, msg, outcome.failures[msg.id].reason, "load_failed")
        self.counters.add(
            items_loaded=outcome.items_loaded, collections_loaded=outcome.collections_loaded
        )

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as e:
                self._errors.append(e)
                self._stop.set()

        return run

    # -- the run -----------------------------------------------------------------------------

    def run(
        self, enqueued: Enqueued, on_tick: Callable[[Counters, dict[str, int]], None] | None = None
    ) -> RunSummary:
        """Run until nothing is pending, then summarise this run's inputs."""
        started = time.perf_counter()
        monitor = self.queues()
        released = monitor.release_orphans()
        if released:
            logger.info("released %d messages leased by a stopped run", released)
        threads = [
            threading.Thread(target=self._guard(self._gen_worker), name=f"gen-{n}", daemon=True)
            for n in range(self.gen_workers)
        ]
        threads.append(
            threading.Thread(target=self._guard(self._load_worker), name="load", daemon=True)
        )
        for t in threads:
            t.start()
        try:
            while not self._stop.is_set():
                pending = monitor.pending()
                if on_tick:
                    on_tick(self.counters, pending)
                if not pending[GEN] and not pending[LOAD]:
                    break
                self._stop.wait(0.25)
        finally:
            self._stop.set()
            for t in threads:
                t.join()
        if self._errors:
            raise self._errors[0]
        summary = self.summarise(monitor, enqueued, time.perf_counter() - started)
        monitor.conn.close()
        return summary

    def summarise(self, queues: LocalQueues, enqueued: Enqueued, seconds: float) -> RunSummary:
        """Count this run's inputs by outcome: a request succeeds when its item landed."""
        gen = queues.states(GEN, enqueued.gen_ids)
        derived = queues.states(LOAD, [f"gen:{i}" for i in enqueued.gen_ids])
        docs = queues.states(LOAD, enqueued.load_ids)
        dead = gen["dead"] + derived["dead"] + docs["dead"]
        return RunSummary(
            requests=len(enqueued.gen_ids),
            documents=len(enqueued.load_ids),
            succeeded=derived["done"] + docs["done"],
            failed=dead + len(enqueued.problems),
            items_loaded=self.counters.items_loaded,
            collections_loaded=self.counters.collections_loaded,
            dead_letters=dead,
            input_errors=len(enqueued.problems),
            seconds=round(seconds, 3),
        )
