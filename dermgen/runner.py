"""Compose the stages on Ray: a pool of generator actors fed shard by shard, supervised with `ray.wait`.

The only generation module that imports Ray (ARCHITECTURE.md names the other Ray adapters: Ray Data
loading, Ray Train wiring). The driver holds no image bytes: actors write PNGs and Parquet to the store
themselves and return small summaries. A shard whose actor dies is resubmitted; dead actors are replaced;
committed shards are skipped on re-runs (see `dermgen.run`). The actors hold a `ShardWorker` (or a
subclass passed as `worker_cls`).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from dermgen.errors import RunFailed
from dermgen.progress import Progress
from dermgen.run import PreparedRun, finalize_run, prepare_run
from dermgen.worker import ShardWorker, WorkerOptions

log = logging.getLogger(__name__)

QUEUE_DEPTH = 2  # shards queued per actor, so it starts the next one without a round trip
PREFETCH_LIMIT = 64  # shard claims taken at once, in parallel, before a round of dispatches
SHARD_LOG_LIMIT = 2_000  # per-shard timing rows kept in the summary; per-actor totals are always kept
ACTOR_START_TIMEOUT_S = float(os.environ.get("DERMGEN_ACTOR_START_TIMEOUT", "600"))


def _generator_actor_class(worker_cls: type[ShardWorker]):
    import ray

    class _LogProxy:
        """The run's duplicate log as a worker calls it (`DuplicateLogClient`), over Ray."""

        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def append(self, actor: str, seen: int, items: list, withdrawn_seen: int):
            return ray.get(self.handle.append.remote(actor, seen, items, withdrawn_seen))

        def withdraw(self, sample_ids: list[str]) -> None:
            self.handle.withdraw.remote(sample_ids)  # answered by nobody: the next append sees it

    @ray.remote(max_restarts=0, max_task_retries=0)
    class GeneratorActor:
        """Holds one ShardWorker (one pipeline on one device) for the actor's lifetime."""

        def __init__(
            self,
            opts: WorkerOptions,
            store_uri: str,
            run_id: str,
            name: str,
            stagger_s: float,
            duplicate_log: Any = None,
        ):
            if stagger_s > 0:  # spread start-up so a big pool does not hit the store/hub at once
                time.sleep(stagger_s)
            self.name = name
            self.worker = worker_cls(opts, store_uri, run_id, actor=name)
            if duplicate_log is not None:
                self.worker.share_duplicates(_LogProxy(duplicate_log))

        def info(self) -> dict[str, Any]:
            out = self.worker.info()
            out["node_id"] = ray.get_runtime_context().get_node_id()
            out["pid"] = os.getpid()
            return out

        def run_shard(self, shard, entry_filter):
            return self.worker.run_shard(shard, entry_filter)

    return GeneratorActor


def _start_duplicate_log(run: PreparedRun):
    """The run's duplicate log (`dermgen.filters.run_index`) in a CPU-less actor on the driver's node,
    seeded with the kept images already committed when the run resumes; None when the filter is off."""
    if run.worker_options.filter == "none":
        return None
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from dermgen.filters.run_index import DuplicateLog

    @ray.remote(num_cpus=0, max_restarts=0)
    class DuplicateLogActor(DuplicateLog):
        def __init__(self, store_uri: str | None) -> None:
            super().__init__()
            if store_uri is not None:
                from dermgen.filters.run_index import kept_fingerprints
                from dermgen.store import open_store

                self.seed(kept_fingerprints(open_store(store_uri)))

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return DuplicateLogActor.options(scheduling_strategy=here).remote(
        run.store.uri if run.resumed_shards else None
    )


def _last_error_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "Exception" in ln:
            return ln
    return lines[-1] if lines else type(exc).__name__


def recorded_cluster(ray_tmp: str | os.PathLike[str] | None = None) -> tuple[str, bool] | None:
    """The cluster `ray start` last recorded on this machine (which a bare `ray.init()` would join) and
    whether its GCS answers; None when none is recorded."""
    root = Path(ray_tmp or os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    try:
        address = (root / "ray_current_cluster").read_text().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return address, True
    except (OSError, ValueError):
        return address, False


def _init_ray(address: str | None) -> bool:
    """Connect to (or start) Ray; returns True if this call started it.

    Without an address (argument or RAY_ADDRESS), Ray joins the cluster `ray start` recorded on this
    machine; when that cluster is gone (killed without `ray stop`), Ray would wait on it for minutes, so a
    local Ray is started instead, with a warning.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return True
    recorded = recorded_cluster()
    if recorded is not None and not recorded[1]:
        log.warning(
            "the Ray cluster recorded at %s by `ray start` does not answer; starting a local Ray instead "
            "(pass --ray-address to join a cluster)",
            recorded[0],
        )
        ray.init(address="local", log_to_driver=True)
    else:
        ray.init(log_to_driver=True)
    return True


def _pool_shape(run: PreparedRun) -> tuple[int, dict[str, float]]:
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    want_gpu = gpus > 0 or (run.config.device or "").startswith("cuda")
    if run.config.num_actors:
        n = run.config.num_actors
    elif gpus:
        n = gpus
    else:
        n = max(1, int(resources.get("CPU", 1)) - 1)
    cpus = run.config.cpus_per_actor
    return n, ({"num_gpus": 1, "num_cpus": cpus} if want_gpu else {"num_cpus": cpus})


def run_generation(
    run: PreparedRun,
    worker_cls: type[ShardWorker] = ShardWorker,
    actor_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every pending shard on Ray actors (each holding a `worker_cls`), then finalize; the run summary.

    Bookkeeping is O(1) per dispatch and per completion (per-actor in-flight counts, a queue of actors
    with a free slot, ready results drained in one wait), so the driver keeps a pool of hundreds of actors
    fed; its memory does not grow with the run (the per-shard log is capped at SHARD_LOG_LIMIT rows).
    `actor_options` overrides the actors' Ray options (e.g. custom resources standing in for GPUs).
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    started_ray = _init_ray(run.config.ray_address)
    actors: dict[str, Any] = {}
    duplicate_log = None
    try:
        n_actors, resources = _pool_shape(run)
        if actor_options:
            resources = {**resources, **actor_options}
        n_actors = min(n_actors, max(1, len(run.scheduler.pending)))
        actor_cls = _generator_actor_class(worker_cls)
        duplicate_log = _start_duplicate_log(run)
        progress = Progress(run.plan.total_target, interval=run.config.progress_interval)
        state: dict[str, str] = {}  # name -> starting|ready|dead
        pings: dict[Any, str] = {}
        inflight: dict[Any, tuple[str, Any]] = {}  # ref -> (actor name, shard)
        refs_of: dict[str, set[Any]] = {}  # actor name -> its in-flight refs
        hungry: deque[str] = deque()  # ready actors with a free slot (rechecked when taken)
        hungry_set: set[str] = set()  # the same names: each actor queued at most once
        retries: dict[str, int] = {}
        shard_log: list[dict[str, Any]] = []
        shard_log_dropped = 0
        per_actor: dict[str, dict[str, float]] = {}  # name -> shards, busy_s, first start, last finish
        infos: dict[str, dict[str, Any]] = {}
        created = 0
        starting = 0  # actors spawned and not yet ready or lost
        max_actors = 3 * n_actors + 2
        stagger = float(os.environ.get("DERMGEN_ACTOR_STAGGER_S", "0.5"))

        def set_state(name: str, new: str) -> None:
            nonlocal starting
            starting += (new == "starting") - (state.get(name) == "starting")
            state[name] = new

        def spawn() -> None:
            nonlocal created
            name = f"gen-{created}"
            created += 1
            # GPU actors take two shard calls at once: the next shard renders while the previous one
            # finishes scoring, writing and committing (ShardWorker serialises rendering). CPU actors take
            # one: there the same cores would do both, which measured slower.
            concurrency = 2 if "num_gpus" in resources else 1
            options = {"max_concurrency": concurrency, **resources}
            handle = actor_cls.options(name=None, **options).remote(
                run.worker_options,
                run.store.uri,
                run.run_id,
                name,
                random.uniform(0, stagger) if created > 1 else 0,
                duplicate_log,
            )
            actors[name] = handle
            set_state(name, "starting")
            refs_of[name] = set()
            pings[handle.info.remote()] = name

        for _ in range(n_actors):
            spawn()
        last_progress_at = time.time()

        def want_work(name: str) -> None:
            if name not in hungry_set:
                hungry_set.add(name)
                hungry.append(name)

        def actor_lost(name: str, why: str) -> None:
            if state.get(name) == "dead":
                return
            set_state(name, "dead")
            log.warning("actor %s lost (%s); resubmitting its shards", name, why)
            for ref in refs_of.pop(name, set()):
                _, shard = inflight.pop(ref)
                run.scheduler.requeue(shard)
            if not run.scheduler.finished:
                for other, st in state.items():  # someone takes the requeued shards
                    if st == "ready":
                        want_work(other)
            try:
                ray.kill(actors[name])
            except Exception:  # noqa: BLE001
                pass
            if created < max_actors and not run.scheduler.finished:
                spawn()

        next_look = 0.0
        while not run.scheduler.finished:
            if run.scheduler.waiting and time.time() >= next_look:  # another driver's shards: look again
                run.scheduler.retry_deferred()
                next_look = time.time() + run.leases.wait_s() if run.leases else 0.0
            # feed actors with a free slot, up to QUEUE_DEPTH shards each (their claims taken at once)
            if hungry and run.scheduler.pending:
                run.scheduler.prefetch(min(len(hungry) * QUEUE_DEPTH, PREFETCH_LIMIT))
            topped_up: list[str] = []  # actors with a slot still free: back in line after this pass
            while hungry and run.scheduler.pending:
                name = hungry.popleft()
                hungry_set.discard(name)
                mine = refs_of.get(name)
                if state.get(name) != "ready" or mine is None:
                    continue
                while len(mine) < QUEUE_DEPTH:
                    # a second queued shard never takes one that a starting or waiting actor would
                    # run first (a run with few shards spreads over the pool instead of queueing)
                    if mine and len(run.scheduler.pending) <= starting + len(hungry):
                        break
                    shard = run.scheduler.next_shard()
                    if shard is None:
                        break
                    entry_filter = run.plan.entry(shard.entry_id).filter
                    ref = actors[name].run_shard.remote(shard, entry_filter)
                    inflight[ref] = (name, shard)
                    mine.add(ref)
                if len(mine) < QUEUE_DEPTH:  # the queue ran dry or is left to others: in line again
                    topped_up.append(name)
            for name in topped_up:
                want_work(name)
            waiting = list(inflight) + list(pings)
            if not waiting:
                if all(s == "dead" for s in state.values()):
                    raise RunFailed("every generator actor died and the replacement budget is spent")
                time.sleep(0.1)
                continue
            done, rest = ray.wait(waiting, num_returns=1, timeout=min(1.0, run.config.progress_interval))
            if done and rest:  # take every other result already there in the same pass
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                done += more
            for ref in done:
                if ref in pings:
                    name = pings.pop(ref)
                    try:
                        infos[name] = ray.get(ref)
                        set_state(name, "ready")
                        want_work(name)
                        last_progress_at = time.time()
                        log.info(
                            "actor %s ready on %s (%s)", name, infos[name]["device"], infos[name]["node"]
                        )
                    except RayActorError as exc:
                        if "creation task" in str(exc):  # the constructor raised: same for every actor
                            raise RunFailed(
                                f"generator actor failed to start: {_last_error_line(exc)}"
                            ) from None
                        actor_lost(name, type(exc).__name__)
                    except RayTaskError as exc:
                        raise RunFailed(
                            f"generator actor failed to start: {exc.cause if exc.cause else exc}"
                        ) from None
                    continue
                if ref not in inflight:  # its actor was lost earlier in this pass: already requeued
                    continue
                name, shard = inflight.pop(ref)
                refs_of.get(name, set()).discard(ref)
                if state.get(name) == "ready":
                    want_work(name)
                try:
                    summary = ray.get(ref)
                except RayActorError as exc:
                    run.scheduler.requeue(shard)
                    actor_lost(name, type(exc).__name__)
                    continue
                except RayTaskError as exc:
                    cause = exc.cause if exc.cause is not None else exc
                    retries[shard.shard_id] = retries.get(shard.shard_id, 0) + 1
                    if retries[shard.shard_id] > run.config.max_shard_retries:
                        raise RunFailed(
                            f"shard {shard.shard_id} failed {retries[shard.shard_id]} times: "
                            f"{type(cause).__name__}: {cause}"
                        ) from None
                    log.warning(
                        "shard %s failed (%s: %s); retrying", shard.shard_id, type(cause).__name__, cause
                    )
                    run.scheduler.requeue(shard)
                    continue
                run.scheduler.complete(shard, summary)
                progress.update(summary)
                if len(shard_log) < SHARD_LOG_LIMIT:
                    shard_log.append(
                        {k: summary[k] for k in ("shard_id", "actor", "started_at", "finished_at")}
                    )
                else:
                    shard_log_dropped += 1
                _account_actor(per_actor, summary)
                last_progress_at = time.time()
            if time.time() - last_progress_at > ACTOR_START_TIMEOUT_S and not any(
                s == "ready" for s in state.values()
            ):
                raise RunFailed(
                    f"no generator actor became ready within {ACTOR_START_TIMEOUT_S:.0f}s; "
                    f"the cluster may lack the resources {resources}"
                )
            progress.tick(run.scheduler.remaining_samples, state)
        progress.tick(0, state, force=True)
        progress.close()
        for handle in actors.values():
            try:
                ray.kill(handle)
            except Exception:  # noqa: BLE001
                pass
        stats = progress.stats()
        stats["actors"] = infos
        stats["actors_created"] = created
        stats["shards"] = shard_log
        stats["shards_not_logged"] = shard_log_dropped
        stats["actor_totals"] = per_actor
        if duplicate_log is not None:
            try:
                stats["duplicate_log"] = ray.get(duplicate_log.stats.remote(), timeout=30)
            except Exception as exc:  # noqa: BLE001 - a summary line, not the run
                log.warning("duplicate log stats unavailable: %s", exc)
        return finalize_run(run, stats)
    except BaseException:
        # stop every attempt before the caller releases this driver's claims: no actor of a failed run
        # keeps writing PNGs under a shard another driver may then take over
        for handle in actors.values():
            try:
                ray.kill(handle)
            except Exception:  # noqa: BLE001
                pass
        raise
    finally:
        if duplicate_log is not None:
            try:
                ray.kill(duplicate_log)
            except Exception:  # noqa: BLE001
                pass
        if started_ray:
            ray.shutdown()


def _account_actor(per_actor: dict[str, dict[str, float]], summary: dict[str, Any]) -> None:
    """Add one shard to its actor's totals (shards, busy seconds, first start, last finish)."""
    a = per_actor.get(summary["actor"])
    start, end = float(summary["started_at"]), float(summary["finished_at"])
    if a is None:
        per_actor[summary["actor"]] = {
            "shards": 1,
            "busy_s": end - start,
            "first_start": start,
            "last_end": end,
        }
        return
    a["shards"] += 1
    a["busy_s"] += end - start
    a["first_start"] = min(a["first_start"], start)
    a["last_end"] = max(a["last_end"], end)


def run_in_process(run: PreparedRun, worker_cls: type[ShardWorker] = ShardWorker) -> dict[str, Any]:
    """The same run without Ray, on one in-process worker (debugging, small machines, benchmarks)."""
    worker = worker_cls(run.worker_options, run.store, run.run_id, actor="local")
    if run.resumed_shards:
        worker.resume_duplicates()
    progress = Progress(run.plan.total_target, interval=run.config.progress_interval)
    try:
        while not run.scheduler.finished:
            shard = run.scheduler.next_shard()
            if shard is None:  # the rest is under another driver's claims: wait, then look again
                time.sleep(run.leases.wait_s() if run.leases else 0.1)
                run.scheduler.retry_deferred()
                continue
            summary = worker.run_shard(shard, run.plan.entry(shard.entry_id).filter)
            run.scheduler.complete(shard, summary)
            progress.update(summary)
            progress.tick(run.scheduler.remaining_samples, {"local": "ready"})
    finally:
        worker.close()
    progress.close()
    stats = progress.stats()
    stats["actors"] = {"local": worker.info()}
    return finalize_run(run, stats)


def generate(
    config,
    *,
    use_ray: bool = True,
    worker_cls: type[ShardWorker] = ShardWorker,
    actor_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate, plan, bind, run and summarise one generation job.

    `worker_cls` renders, filters, writes and commits each shard: `ShardWorker` or a subclass of it (the
    reliability tests inject faults this way); with Ray it must be importable or picklable by value.
    """
    run = prepare_run(config)
    try:
        return _run_prepared(run, use_ray, worker_cls, actor_options)
    finally:
        run.close()  # on any failure too: this driver's claims are released, not left to expire


def _run_prepared(
    run: PreparedRun,
    use_ray: bool,
    worker_cls: type[ShardWorker],
    actor_options: dict[str, Any] | None,
) -> dict[str, Any]:
    log.info(
        "run %s -> %s: %d planned kept images (%s), %d shard(s) to render, %d already committed",
        run.run_id,
        run.store.uri,
        run.plan.total_target,
        ", ".join(f"{k} {v}" for k, v in sorted(run.plan.targets_by_label().items())),
        len(run.scheduler.pending),
        run.resumed_shards,
    )
    if run.scheduler.finished:
        log.info("nothing to do: every shard is committed")
        return finalize_run(run, {"elapsed_s": 0.0, "images": 0})
    if not use_ray:
        return run_in_process(run, worker_cls)
    return run_generation(run, worker_cls, actor_options)
