"""The streaming worker: a Faust app for lifecycle, group membership and the web views; the worker reads the events
(processor/worker/feed.py), sends its outputs and keeps its state (processor/worker/store.py) itself.

Faust's consumer group assigns the events partitions. A pump task reads the owned partitions directly, each from its
stored applied offset + 1, folds each batch with `StreamProcessor.process` and checkpoints it in one documented order
(processor/worker/checkpoint.py, docs/running.md "Checkpoint, fencing and failures"):

1. outputs sent and acknowledged;
2. state entries (touched accounts, then the partition's clock) sent to the changelog topic and acknowledged; with
   `exactly_once`, outputs and entries of a partition are one Kafka transaction, committed here;
3. the local store updated;
4. every commit interval, the group's offsets committed (lag tools; a refusal means the partitions are gone).

After a crash at any point, the next owner of a partition restores it from the changelog (records of aborted
transactions are never read) and resumes from the applied offset in its clock: outputs may repeat with the same ids,
none are lost, nothing is counted twice. A worker that lost its partitions (rebalance, refused commit, expired
session, fenced transaction) stops writing for them before anything else (`FencedError`), logs one line, and waits for
its next assignment. Failures of steps 1 and 2 and of a recovery stop the worker with `EXIT_CHECKPOINT` and one line.

Faust's stream is not used for the events: it delivers about 7,000 events/s here whatever the agent does, and around
restarts and rebalances it dropped records in flight and committed offsets it never delivered (docs/performance.md).
An agent stays subscribed to the events topic so that Faust assigns its partitions; the pump pauses them in Faust's
consumer and ignores records the agent still gets. The Faust internals still used are all in
processor/faust_adapter.py, checked at startup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import Counter
from typing import Any

import faust

from processor import faust_adapter
from processor.core.fold import LiveView
from processor.kafka_security import access_error, check_group_access, current_security
from processor.metrics import worker as worker_metrics
from processor.topics import EVENTS, topic_names
from processor.web.auth import Access
from processor.web.tls import contexts as tls_contexts
from processor.worker.checkpoint import AT_LEAST_ONCE, EXACTLY_ONCE, Checkpoint, supports_transactions
from processor.worker.collector import tune_collector
from processor.worker.config import WorkerConfig
from processor.worker.errors import CheckpointError, FencedError
from processor.worker.faults import Faults
from processor.worker.feed import PartitionFeed
from processor.worker.partition import BatchResult
from processor.worker.peers import FORWARDED_HEADER, RETRY_AFTER_S, Answer, Local, PeerRouter, peer_urls
from processor.worker.runner import StreamProcessor
from processor.worker.shutdown import arm_stop_deadline
from processor.worker.state import account_header, account_key, clock_key, decode_clock, is_account_key, is_clock_key
from processor.worker.store import ChangelogStore, changelog_topic, ensure_changelog
from schemas.events import format_ms

log = logging.getLogger("ccmeter.worker")

EXIT_CRASH = 70  # an unexpected exception
EXIT_CHECKPOINT = 75  # a checkpoint step failed (broker unreachable, ...): a restart resumes from the changelog
WAIT_S = 0.05  # pause of the pump while Faust rebalances


class Worker:
    """The app, the store, the pump and the views."""

    def __init__(
        self,
        config: WorkerConfig,
        partitions: int,
        guarantee: str = AT_LEAST_ONCE,
        access: Access | None = None,
    ) -> None:
        """`access`: the HTTP API's tokens (default: from `config`; ValueError with one line for bad settings)."""
        self.config = config
        self.access = access if access is not None else Access.from_config(config)
        server_ssl, peer_ssl = tls_contexts(config.web_tls_cert, config.web_tls_key)
        scheme = "https" if server_ssl is not None else "http"
        self.partitions = partitions
        self.guarantee = guarantee
        self.names = names = {**topic_names(config.prefix), EVENTS: config.events}
        self.events_topic_name = names[EVENTS]
        self.app = app = faust.App(
            config.app_id,
            broker=[f"kafka://{server}" for server in config.broker.split(",")],
            broker_credentials=current_security().faust_credentials(),
            datadir=config.state_dir,
            autodiscover=False,
            web_enabled=True,
            web_host=config.web_host,
            web_port=config.web_port,
            web_bind=config.web_bind,
            canonical_url=f"{scheme}://{config.web_host}:{config.web_port}",
            web_ssl_context=server_ssl,
            # Faust's own pages (cluster topology, tables, sensors) would bypass the tokens: not served.
            web_router_enabled=False,
            web_tables_enabled=False,
            web_graph_enabled=False,
            web_stats_enabled=False,
            topic_partitions=partitions,
            topic_replication_factor=config.replication,
            broker_session_timeout=config.session_timeout / 1000,
            broker_heartbeat_interval=config.heartbeat_interval / 1000,
            broker_rebalance_timeout=config.rebalance_timeout / 1000,
            broker_commit_interval=config.commit_interval / 1000,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            processing_guarantee="at_least_once",  # Faust's own: it writes nothing of ours
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw"}
        raw["value_serializer"] = "raw"
        self.events = app.topic(names[EVENTS], **raw)
        self.faust = faust_adapter.FaustAdapter(app, names[EVENTS])
        self.faults = Faults.from_env()
        self.store = ChangelogStore(config.broker, changelog_topic(config.app_id), config.store, config.state_dir)
        self.store.on_recovery_batch = lambda: self.faults.hit("during_recovery")
        self.checkpoint = Checkpoint(config.broker, config.app_id, names, self.store, guarantee, self.faults)
        self.feed = PartitionFeed(config.broker, names[EVENTS])
        self.ignored = 0  # records Faust's stream delivered to the placeholder agent
        self._lock = asyncio.Lock()  # held for a whole batch; the revocation handler takes it too
        self._commit_due = 0.0
        self._commit_timeout_s = config.session_timeout / 1000  # the group forgets a silent member by then anyway
        self._confirmed = time.monotonic()  # when the group last accepted this member (commit or assignment)
        self._fenced_at: float | None = None  # set when the partitions were lost; cleared by the next assignment
        self.fenced = 0  # how often this worker found itself fenced
        self.processor = StreamProcessor(
            self.events_topic_name,
            config.settings,
            self.store,
            share=config.near_capacity,
            max_record_bytes=config.max_record_bytes,
        )
        self.router = PeerRouter(ssl_context=peer_ssl)
        self.metrics = worker_metrics.WorkerMetrics()
        self._register()

    # -- wiring ----------------------------------------------------------------------------------------------------

    def _register(self) -> None:
        app, worker = self.app, self

        @app.agent(self.events, name="ccmeter-assignment", concurrency=1)
        async def assignment(stream: faust.StreamT) -> None:
            """Keeps the events topic in Faust's subscription (the pump reads it); ignores what it is given."""
            async for _ in stream.events():
                worker.ignored += 1

        @app.task
        async def pump() -> None:
            try:
                await worker.pump()
            except asyncio.CancelledError:
                raise
            except CheckpointError as exc:  # the changelog holds everything applied: a restart resumes there
                log.error("%s", exc.line())
                logging.shutdown()
                os._exit(EXIT_CHECKPOINT)
            except Exception:  # noqa: BLE001 - the changelog holds everything applied: a restart resumes there
                log.exception("processing failed; exiting so that a fresh worker resumes from the changelog")
                logging.shutdown()
                os._exit(EXIT_CRASH)

        async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
            async with worker._lock:  # let the batch in flight finish before the partitions go elsewhere
                await worker.release_all()

        async def on_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
            if worker._fenced_at is not None:
                log.info("new assignment after being fenced: resuming")
            worker._fenced_at = None
            worker._confirmed = time.monotonic()

        app.on_partitions_revoked.connect(on_revoked)
        app.on_partitions_assigned.connect(on_assigned)
        worker_metrics.install(app, worker)  # GET /metrics

        @app.service
        class CloseClients(faust.Service):
            """Stops the pump's clients with the app; owned partitions are released cleanly (checkpoints)."""

            async def on_stop(self) -> None:
                async with worker._lock:
                    await worker.release_all()
                    await worker.checkpoint.close()
                    await worker.feed.close()
                await worker.router.close()

        @app.page("/accounts/{account_id}/usage")
        class AccountUsage(faust.web.View):
            """Live usage of one account, answered by any worker (this one or a peer: processor/worker/peers.py)."""

            async def get(self, request: faust.web.Request, account_id: str) -> faust.web.Response:
                refused = worker.refusal(self, request, account_id)
                if refused is not None:
                    return refused
                forwarded = FORWARDED_HEADER in request.headers
                authorization = request.headers.get("Authorization")
                answer = await worker.live_answer(account_id, str(request.rel_url), forwarded, authorization)
                headers = {"Retry-After": str(RETRY_AFTER_S)} if answer.status == 503 else None
                return self.json(answer.body, status=answer.status, headers=headers)

        @app.page("/health")
        class Health(faust.web.View):
            """Liveness and counters of this worker (no token needed: probes and supervisors poll it)."""

            async def get(self, request: faust.web.Request) -> faust.web.Response:
                return self.json(worker.health())

        from processor.console.live import mount as mount_console

        mount_console(app, worker, self.config.app_id)  # the console and /api/... (processor/console/live.py)

    def refusal(
        self, view: faust.web.View, request: faust.web.Request, account_id: str | None = None
    ) -> faust.web.Response | None:
        """The 401/403 response when the request's token may not call this view, else None. `account_id` None:
        the view needs an operator token (e.g. /metrics). Every view but /health starts with it."""
        denied = self.access.check(request.headers, account_id)
        if denied is None:
            return None
        return view.json(denied.body, status=denied.status, headers=denied.headers or None)

    # -- ownership -------------------------------------------------------------------------------------------------

    def assigned(self) -> set[int]:
        """Events-topic partitions this worker owns now (assigned and recovered)."""
        if self._fenced_at is not None:
            return set()
        return self.faust.assigned() & self.store.owned()

    def ready(self) -> bool:
        """Whether the assignment is settled, this worker is not fenced and its partitions are recovered."""
        if self._fenced_at is not None or not self.faust.settled():
            return False
        return self.faust.assigned() <= self.store.owned()

    async def take(self, mine: list[int]) -> None:
        """Own exactly `mine`: release partitions gone, and for new ones first start their producers (fencing the
        previous owner), then recover their state from the changelog."""
        owned = self.store.owned()
        gone = sorted(owned - set(mine))
        new = [p for p in mine if p not in owned]
        if gone:
            await self._release(gone)
        if new:
            await self.checkpoint.own(new)
            await self.store.acquire(new)
            self._confirmed = time.monotonic()
        if gone or new:
            self.processor.reset()

    async def _release(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.store.release(partition)
        await self.checkpoint.drop(partitions)

    async def release_all(self) -> None:
        """Let every partition go cleanly (revocation, shutdown)."""
        await self._release(sorted(self.store.owned()))
        self.processor.reset()

    async def fence(self, error: FencedError) -> None:
        """This worker lost its partitions: stop writing for all of them at once, forget their state, say so."""
        log.error("%s", error.line())
        self._fenced_at = time.monotonic()
        self.fenced += 1
        for partition in sorted(self.store.owned()):
            self.store.forget(partition)
        await self.checkpoint.drop(sorted(self.store.owned() | set(error.partitions) | set(range(self.partitions))))
        self.processor.reset()

    def _fence_expired(self) -> bool:
        """Fenced for longer than a rejoin can take: the group has forgotten this member."""
        if self._fenced_at is None:
            return False
        limit = (self.config.session_timeout + self.config.rebalance_timeout) / 1000 + 10
        return time.monotonic() - self._fenced_at > limit

    # -- the pump --------------------------------------------------------------------------------------------------

    async def pump(self) -> None:
        """Read, fold, checkpoint: until the app stops (see the module docstring)."""
        access = self.access.describe()
        (log.warning if self.access.insecure_no_auth or not self.access.entries else log.info)("%s", access)
        log.info(
            "processing guarantee %s, store %s, changelog %s%s",
            self.guarantee,
            self.config.store,
            self.store.topic,
            f", faults armed: {self.faults.armed}" if self.faults.armed else "",
        )
        while not self.app.should_stop:
            if self._fence_expired():
                error = FencedError("no new assignment came after this worker was fenced", set())
                error.expect = "the worker exits so that a restart rejoins the group"
                raise error
            if self._fenced_at is not None or not self.faust.settled():
                await asyncio.sleep(WAIT_S)
                continue
            async with self._lock:
                mine = sorted(self.faust.assigned()) if self.faust.settled() and self._fenced_at is None else []
                try:
                    await self.take(mine)
                    if mine:
                        await self._step(mine)
                except FencedError as exc:
                    await self.fence(exc)
            if not mine:
                await asyncio.sleep(WAIT_S)

    async def _step(self, mine: list[int]) -> None:
        """One batch of the owned partitions, then the group commit when due."""
        config = self.config
        self.faust.pause(mine)  # Faust resumes them after each rebalance
        positions = {p: await self._position(p) for p in mine}
        fetched = await self.feed.fetch(positions, config.batch_size, config.batch_within)
        if fetched:
            began = time.perf_counter()
            results = [self.processor.process(p, raws, accept_gaps=True) for p, raws in fetched.items()]
            await self.commit_results(results)
            self.metrics.batch(results, time.perf_counter() - began)
        await self._commit_offsets(mine)

    async def _position(self, partition: int) -> int:
        """The next offset to read: the stored applied offset + 1, else the partition's log start."""
        state = self.processor.partition(partition)
        if not state.start_known:
            state.applied = max(state.applied, await self.feed.log_start(partition) - 1)
            state.start_known = True
        return state.applied + 1

    async def commit_results(self, results: list[BatchResult]) -> None:
        """Steps 1-3 of the checkpoint (processor/worker/checkpoint.py) for one batch."""
        if self.guarantee != EXACTLY_ONCE:
            await self._confirm_membership(sorted(r.partition for r in results))
        await self.checkpoint.write(results)
        for result in results:
            self.processor.trim(result.partition, keep=(k.decode() for k in result.states if is_account_key(k)))
        self.faults.hit("before_commit")

    async def _confirm_membership(self, partitions: list[int]) -> None:
        """Without transactions nothing fences a paused worker. The group confirms this member at every commit
        interval; without that for a whole session timeout (a long pause, a frozen VM), the session has expired:
        fenced. For half of one, ask the group now by committing the offsets already applied."""
        silent = time.monotonic() - self._confirmed
        if silent > self.config.session_timeout / 1000:
            raise FencedError(f"no word from the group for {silent:.1f}s (session timeout passed)", set(partitions))
        if silent <= self.config.session_timeout / 2000:
            return
        stored = {p: self._stored_applied(p) + 1 for p in partitions}
        if not await self.faust.commit({p: max(o, 0) for p, o in stored.items()}):
            raise FencedError("the group no longer knows this member (session expired or rebalanced)", set(partitions))
        self._confirmed = time.monotonic()

    def _stored_applied(self, partition: int) -> int:
        raw = self.store.get(clock_key(partition))
        return decode_clock(raw).applied if raw is not None else -1

    async def _commit_offsets(self, partitions: list[int]) -> None:
        """Step 4, every commit interval: commit `applied + 1` of each owned partition for the group (lag tools; a
        refused commit used to be counted as done, which left the group's offsets behind for good). A refusal means
        the group took the partitions away: FencedError."""
        now = time.monotonic()
        if now < self._commit_due or self.app.should_stop:  # stopping: the group is being left, nothing to tell it
            return
        offsets = {p: self.processor.partition(p).applied + 1 for p in partitions}
        offsets = {p: offset for p, offset in offsets.items() if offset > 0}
        # Committed even when unchanged: each accepted commit confirms this member (`_confirm_membership`). Bounded:
        # during a rebalance that cannot finish (a stop under way) Faust's commit waits for ever, holding the pump's
        # lock, and with it the stop (a worker stopped just after a join waited for its stop deadline).
        try:
            accepted = not offsets or await asyncio.wait_for(self.faust.commit(offsets), self._commit_timeout_s)
        except TimeoutError:
            log.warning("committing offsets %s took over %gs: left to the next one", offsets, self._commit_timeout_s)
            return
        if not accepted:
            raise FencedError(f"the group refused the commit of offsets {offsets}", set(offsets))
        self._commit_due = now + self.config.commit_interval / 1000
        if offsets:
            self._confirmed = time.monotonic()

    # -- queries ---------------------------------------------------------------------------------------------------

    async def live_answer(
        self, account_id: str, path: str, forwarded: bool, authorization: str | None = None
    ) -> Answer:
        """Status and body of GET /accounts/{account_id}/usage (`path`: the request's encoded path and query;
        `authorization`: the caller's header, passed on to the peers asked)."""
        local = self.local_live(account_id)
        peers = [] if forwarded or local.body is not None else self.peer_urls()
        total = self.all_partitions()
        answer = await self.router.answer(account_id, path, forwarded, local, peers, total, authorization)
        self.metrics.live_query(answer, local)
        return answer

    def local_live(self, account_id: str) -> Local:
        """This worker's part of a live query: settled or not, its partitions, its answer if it holds the account."""
        if not self.ready():
            return Local(False, frozenset())
        mine = frozenset(self.assigned())
        view = own_view(self.processor, account_id, mine)
        return Local(True, mine, live_json(view) if view is not None else None)

    def peer_urls(self) -> list[str]:
        """Web URLs of the other members of the group that own events partitions (from the last assignment)."""
        return peer_urls(self.faust.members(), str(self.app.conf.canonical_url))

    def all_partitions(self) -> range:
        """Every partition of the events topic (a 404 needs all of them checked)."""
        return range(self.faust.partition_count() or self.partitions)

    def health(self) -> dict[str, Any]:
        """Status of this worker (GET /health)."""
        watermarks: dict[str, str | None] = {}
        counts: Counter[str] = Counter()  # kept with each partition's clock entry: they survive restarts
        mine = sorted(self.assigned())
        for partition in mine:
            raw = self.store.get(clock_key(partition))
            clock = decode_clock(raw) if raw else None
            watermark = clock.watermark if clock else None
            watermarks[str(partition)] = format_ms(watermark) if watermark is not None else None
            counts.update(clock.counts if clock else {})
        return {
            "status": "ok",
            "app_id": self.config.app_id,
            "events_topic": self.events_topic_name,
            "processing_guarantee": self.guarantee,
            "partitions": mine,
            "rebalancing": not self.ready(),
            "fenced": self._fenced_at is not None,
            "watermarks": watermarks,
            "counts": dict(sorted(counts.items())),
            "stats": {
                **self.processor.stats.as_dict(),
                "ignored_stream_records": self.ignored,
                "outputs": self.checkpoint.sent,
                "restored_changelog_records": self.store.restored,
                "fenced": self.fenced,
            },
        }


def _ms(timestamp: float | None) -> int | None:
    """Faust gives record timestamps in seconds; the fold wants ms."""
    return None if timestamp is None or timestamp < 0 else round(timestamp * 1000)


def own_view(processor: StreamProcessor, account_id: str, mine: frozenset[int]) -> LiveView | None:
    """The account's live view if one of the partitions `mine` holds it, else None (the store holds only owned
    partitions; an entry of another partition, e.g. written before a rebalance moved it, is not ours)."""
    try:
        key = account_key(account_id)
    except UnicodeError:  # e.g. a lone surrogate from a percent-encoded path
        return None
    if is_clock_key(key):
        return None
    raw = processor.store.get(key)
    if raw is not None and account_header(raw)[0] not in mine:
        return None
    return processor.live_view(account_id)


def live_json(view: Any) -> dict[str, Any]:
    """The JSON body of GET /accounts/{id}/usage."""
    return {
        "account_id": view.account_id,
        "usage": view.usage,
        "licenses": view.licenses,
        "overage_allowance": view.overage_allowance,
        "headroom": view.headroom,
        "today_peak": view.today_peak,
        "today_peak_at": format_ms(view.today_peak_at_ms) if view.today_peak_at_ms is not None else None,
        "as_of": format_ms(view.as_of_ms) if view.as_of_ms is not None else None,
        "data_through": format_ms(view.data_through_ms) if view.data_through_ms is not None else None,
    }


async def prepare(config: WorkerConfig, partitions: int) -> str:
    """Create the changelog topic if missing and pick the processing guarantee; ValueError with one line if they
    cannot be used; KafkaAccessError if the consumer group is refused (aiokafka would retry the join forever)."""
    await check_group_access(config.broker, current_security(), config.app_id)
    topic = changelog_topic(config.app_id)
    count = await ensure_changelog(config.broker, topic, partitions, config.replication)
    if count != partitions:
        raise ValueError(f"changelog topic {topic} has {count} partitions, {config.events} has {partitions}")
    wanted = config.processing_guarantee
    if wanted == AT_LEAST_ONCE:
        return AT_LEAST_ONCE
    if await supports_transactions(config.broker, config.app_id):
        return EXACTLY_ONCE
    if wanted == EXACTLY_ONCE:
        raise ValueError(f"--processing-guarantee exactly_once: the broker at {config.broker} has no transactions")
    return AT_LEAST_ONCE


class DeadlineWorker(faust.Worker):
    """Faust's worker whose stop has a deadline (processor/worker/shutdown.py). `on_stop` is mode's documented
    hook of a service's stop, run before its children stop; the worker is the root service, so the countdown
    starts when the stop does."""

    stop_deadline_s: float = 30.0

    async def on_stop(self) -> None:
        arm_stop_deadline(self.stop_deadline_s)
        await super().on_stop()


def run_worker(config: WorkerConfig, partitions: int) -> int:
    """Build the app and run it until SIGINT/SIGTERM (blocks; returns the exit status)."""
    from aiokafka.errors import KafkaError

    try:
        faust_adapter.self_check()
        Faults.from_env()
        access = Access.from_config(config)
        tls_contexts(config.web_tls_cert, config.web_tls_key)
        guarantee = asyncio.run(prepare(config, partitions))
    except (faust_adapter.FaustIncompatible, ValueError, KafkaError, OSError) as exc:
        refused = access_error(exc, config.broker, current_security())
        print(f"ccmeter worker: {refused or exc}", file=sys.stderr)
        # A bad setting (ValueError) is a usage error; an unreachable broker, a refusal, a file or an incompatible
        # Faust is a runtime failure.
        return 2 if isinstance(exc, ValueError) and not refused else 1
    worker = Worker(config, partitions, guarantee, access)
    tune_collector()  # fewer, larger young-generation collections: about 10% more events/s
    faust_worker = DeadlineWorker(worker.app, loglevel=config.log_level, stdout=sys.stdout, stderr=sys.stderr)
    faust_worker.stop_deadline_s = config.shutdown_timeout / 1000
    faust_worker.spinner = None  # with a spinner, Faust sets the root logger to DEBUG below `info` (15 % slower)
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
