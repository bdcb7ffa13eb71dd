"""The per-shard stage composition: render -> encode + filter -> write PNGs -> commit Parquet.

With ``--images parquet`` no PNG objects are written: the bytes travel only inside the shard's rows.

`ShardWorker` is what a Ray actor holds, but it has no Ray in it: tests and benchmarks drive it directly.
On a GPU, post-processing of batch k (PNG encoding, scoring, uploads) runs on a background thread while
batch k+1 renders, so the accelerator does not wait for the CPU. Image bytes never leave the worker.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dermgen.hashing import sha256_bytes
from dermgen.pipeline import LoraSpec, Renderer, RenderResult
from dermgen.plan import Sample, Shard, batches
from dermgen.pngmeta import a1111_parameters, encode_png
from dermgen.prompts import is_truncated, token_count
from dermgen.rundir.images import ImageLayout, image_value
from dermgen.schema import empty_scores
from dermgen.shards import commit_shard
from dermgen.skintone import skin_tone_of
from dermgen.store import Store, open_store

log = logging.getLogger(__name__)


@dataclass
class WorkerOptions:
    model: str = "tiny"
    filter: str = "default"
    filter_overrides: dict[str, float | None] | None = None
    reference_dir: str | None = None
    clip_model: str | None = None
    batch_size: int = 8
    save_dropped: bool = True
    images: ImageLayout = "files"  # where image bytes live (dermgen.rundir.images): no PNG objects in parquet
    device: str | None = None
    dtype: str | None = None
    allow_pickle: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    png_compress_level: int = 3
    global_loras: tuple[LoraSpec, ...] = ()
    warmup_size: tuple[int, int] | None = None  # render at start (compiles the graph with --compile)
    # One warm-up batch per sampler the plan uses: timesteps are float32 for Euler / Euler a and int64
    # for the others, and each dtype is its own compiled graph; compiling it mid-shard would stall a batch.
    warmup_samplers: tuple[str, ...] = ("Euler",)
    noise: str = "cpu"  # where per-sample noise is drawn: "cpu" (plan v1) or "device" (plan v2)
    channels_last: bool | None = None  # None: on a GPU only


NON_FINITE_ERROR = (
    "non-finite pixels: NaN or inf in the latents or the decoded image (fp16 overflow? try --dtype bf16)"
)


def make_filter(opts: WorkerOptions):
    """The filter stage, or None when scoring is switched off (`--filter none`: every image kept)."""
    if opts.filter == "none":
        return None
    from dermgen.filters import build_filter

    return build_filter(
        opts.filter,
        overrides=opts.filter_overrides or None,
        reference_dir=opts.reference_dir,
        clip_model=opts.clip_model,
    )


def _is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()


class InlineExecutor:
    """The executor interface, run in the caller's thread (post-processing on CPU devices)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future, as a thread pool would
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True) -> None:
        pass


class ShardWorker:
    """Holds one Renderer and one filter; renders shards and commits them to the store."""

    def __init__(self, opts: WorkerOptions, store: Store | str, run_id: str, actor: str = "local") -> None:
        self.opts = opts
        self.store = open_store(store) if isinstance(store, str) else store
        self.run_id = run_id
        self.actor = actor
        self.node = socket.gethostname()
        t0 = time.perf_counter()
        self.renderer = Renderer(
            opts.model,
            device=opts.device,
            dtype=opts.dtype,
            batch_size=opts.batch_size,
            allow_pickle=opts.allow_pickle,
            compile=opts.compile,
            cuda_graphs=opts.cuda_graphs,
            pad_batches=False,  # padding only where a compiled graph needs static shapes
            noise=opts.noise,
            channels_last=opts.channels_last,
        )
        self.filter = make_filter(opts)
        if opts.warmup_size:
            w, h = opts.warmup_size
            n = self.renderer.batch_size
            for sampler in opts.warmup_samplers:
                self.renderer.render(
                    ["warm-up"] * n,
                    [""] * n,
                    list(range(n)),
                    sampler=sampler,
                    steps=2,
                    cfg_scale=7.0,
                    width=w,
                    height=h,
                )
        self.load_seconds = time.perf_counter() - t0
        # On a GPU, post-processing runs on a thread while the GPU renders the next batch. On a CPU device
        # the same cores do both, and a second busy thread stalls torch's OpenMP team (measured 4-16%
        # slower than running it between batches), so there it runs inline.
        on_gpu = self.renderer.device.startswith("cuda")
        self._render_lock = threading.Lock()  # one shard renders at a time; commits may overlap it
        self._post = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="dermgen-post")
            if on_gpu
            else InlineExecutor()
        )
        log.info(
            "worker %s ready in %.1fs on %s (%s)",
            actor,
            self.load_seconds,
            self.renderer.device_name,
            self.renderer.dtype_name,
        )

    def share_duplicates(self, duplicate_log: Any) -> None:
        """Match images against every actor's kept images through the run's duplicate log
        (:mod:`dermgen.filters.run_index`), not only against this worker's."""
        flt = getattr(self, "filter", None)
        if flt is not None:
            flt.share_duplicates(duplicate_log, self.actor)

    def resume_duplicates(self) -> int:
        """Put the run's committed kept images in this worker's duplicate index (a resumed run in one
        process), so a resumed run drops copies of images kept before it stopped; how many were added."""
        flt = getattr(self, "filter", None)
        if flt is None or flt.run_index is None:
            return 0
        from dermgen.filters.run_index import kept_fingerprints

        n = flt.run_index.seed(kept_fingerprints(self.store))
        log.info("duplicate index resumed with %d kept image(s) of the run", n)
        return n

    def info(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "node": self.node,
            "device": self.renderer.device_name,
            "dtype": self.renderer.dtype_name,
            "model": self.renderer.identity.to_dict(),
            "load_seconds": round(self.load_seconds, 3),
            "batch_size": self.renderer.batch_size,
        }

    def commit(self, shard_id: str, rows: list[dict[str, Any]], written: list[str]) -> Any:
        """Commit a shard whose PNGs are written: its Parquet object appears, or the shard does not exist.

        The one step between "images written" and "shard committed"; a subclass may wrap it (the
        reliability tests kill the process here to leave an orphaned attempt behind).
        """
        return commit_shard(self.store, shard_id, rows, written)

    def run_shard(self, shard: Shard, entry_filter: dict[str, float | None] | None = None) -> dict[str, Any]:
        """Render, score and write every sample of `shard`, then commit it. Returns a small summary.

        Safe to call from two threads (a GPU actor takes two shard calls at once): rendering is serialised,
        so one shard renders while the other finishes its post-processing and commit, and the device does
        not wait for the store.
        """
        attempt_id = uuid.uuid4().hex[:12]
        rows: list[dict] = []
        written: list[str] = []
        pending: list[Future] = []
        gen_seconds = 0.0
        with self._render_lock:
            t0 = time.perf_counter()
            started_at = time.time()
            for batch in batches(shard, self.renderer.batch_size):
                loras = self._loras_for(batch[0])
                for sub, result, err, secs, bs in self._render_batch(batch):
                    gen_seconds += secs
                    pending.append(
                        self._post.submit(
                            self._post_process, sub, result, err, secs, bs, loras, attempt_id, entry_filter
                        )
                    )
        for fut in pending:
            batch_rows, batch_keys = fut.result()
            rows.extend(batch_rows)
            written.extend(batch_keys)
        rows.sort(key=lambda r: r["index"])
        for r in rows:
            r["shard_id"] = shard.shard_id
        result = self.commit(shard.shard_id, rows, written)
        reasons: Counter[str] = Counter()
        for r in rows:
            reasons.update(r["drop_reasons"] or [])
        return {
            "shard_id": shard.shard_id,
            "entry_id": shard.entry_id,
            "label": shard.label,
            "committed": result.committed,
            "attempt_id": attempt_id,
            "planned": len(shard),
            "ok": sum(r["status"] == "ok" for r in rows),
            "failed": sum(r["status"] != "ok" for r in rows),
            "kept": sum(bool(r["kept"]) for r in rows),
            "drop_reasons": dict(reasons),
            "seconds": time.perf_counter() - t0,
            "started_at": started_at,
            "finished_at": time.time(),
            "gen_seconds": gen_seconds,
            "actor": self.actor,
            "node": self.node,
        }

    def _loras_for(self, sample: Sample) -> list[dict[str, Any]]:
        specs = list(self.opts.global_loras) + [LoraSpec(p, s) for p, s in sample.loras]
        return self.renderer.set_loras(specs)

    def _render_batch(self, batch: list[Sample]):
        """Yield (samples, RenderResult|None, error|None, seconds, batch_size); halves the batch on OOM."""
        todo = [batch]
        while todo:
            part = todo.pop(0)
            bs = self.renderer.batch_size
            if len(part) > bs:  # larger than the batch size after an OOM halving: split it
                todo[:0] = [part[i : i + bs] for i in range(0, len(part), bs)]
                continue
            s0 = part[0]
            t = time.perf_counter()
            try:
                result = self.renderer.render_batch(
                    [s.prompt for s in part],
                    [s.negative_prompt for s in part],
                    [s.seed for s in part],
                    sampler=s0.sampler,
                    steps=s0.steps,
                    cfg_scale=s0.cfg_scale,
                    width=s0.width,
                    height=s0.height,
                )
                yield (
                    part,
                    result,
                    None,
                    time.perf_counter() - t,
                    self.renderer.rendered_batch_size(len(part)),
                )
            except Exception as exc:  # noqa: BLE001 - every sample gets a row, failures too
                if _is_oom(exc) and self.renderer.batch_size > 1:
                    self._free_memory()
                    self.renderer.batch_size = max(1, self.renderer.batch_size // 2)
                    log.warning("out of memory; batch size halved to %d", self.renderer.batch_size)
                    todo.insert(0, part)  # split to the new size on the next turn
                    continue
                log.exception("rendering %d sample(s) of %s failed", len(part), s0.entry_id)
                msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
                yield part, None, msg, time.perf_counter() - t, self.renderer.rendered_batch_size(len(part))

    def _free_memory(self) -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    def _post_process(
        self,
        samples: list[Sample],
        result: RenderResult | None,
        error: str | None,
        gen_secs: float,
        batch_size: int,
        loras: list[dict[str, Any]],
        attempt_id: str,
        entry_filter: dict[str, float | None] | None,
    ) -> tuple[list[dict], list[str]]:
        ident = self.renderer.identity
        rows: list[dict[str, Any]] = []
        keys: list[str] = []
        rendered: list[tuple[dict[str, Any], Sample, bytes, float, float, Any]] = []
        now = datetime.now(timezone.utc)
        per_image = gen_secs / max(1, len(samples))
        for i, s in enumerate(samples):
            row = self._base_row(s, attempt_id, loras, batch_size, now)
            rows.append(row)
            if result is None or not result.finite[i]:
                if result is not None:
                    log.error("sample %s rendered non-finite pixels; marked failed", s.sample_id)
                row.update(
                    status="failed",
                    error=error if result is None else NON_FINITE_ERROR,
                    kept=False,
                    drop_reasons=["failed"],
                    timings={"generate_s": per_image, "encode_s": None, "filter_s": None},
                )
                continue
            img = result.images[i]
            t = time.perf_counter()
            png = encode_png(
                img,
                a1111_parameters(
                    prompt=s.prompt,
                    negative_prompt=s.negative_prompt,
                    steps=s.steps,
                    sampler=s.sampler,
                    cfg_scale=s.cfg_scale,
                    seed=s.seed,
                    width=s.width,
                    height=s.height,
                    model_hash=ident.short_hash,
                    model_name=ident.model_id,
                    loras=loras,
                ),
                extra={"sample_id": s.sample_id, "run_id": self.run_id, "entry_id": s.entry_id},
                compress_level=self.opts.png_compress_level,
            )
            t_enc = time.perf_counter() - t
            t = time.perf_counter()
            scored = self.filter.score(img) if self.filter is not None else None
            rendered.append((row, s, png, t_enc, time.perf_counter() - t, scored))
        # the duplicate decision for the whole batch at once: one round trip to the run's shared index
        decisions: list[Any] = [None] * len(rendered)
        t = time.perf_counter()
        if self.filter is not None and rendered:
            decisions = self.filter.decide_many(
                [(s.sample_id, scored) for _, s, _, _, _, scored in rendered],
                overrides=entry_filter or None,
                skin_tones=[s.skin_tones for _, s, _, _, _, _ in rendered],
            )
        t_decide = (time.perf_counter() - t) / max(1, len(rendered))
        for (row, s, png, t_enc, t_score, _), res in zip(rendered, decisions, strict=True):
            kept, reasons, scores = True, [], empty_scores()
            if res is not None:
                kept, reasons = bool(res.kept), list(res.reasons)
                scores.update(
                    {k: (None if v is None else float(v)) for k, v in res.scores.items() if k in scores}
                )
            row.update(
                status="ok",
                kept=kept,
                drop_reasons=reasons,
                scores=scores,
                skin_tone=skin_tone_of(scores.get("ita")),
                image_sha256=sha256_bytes(png),
                timings={
                    "generate_s": per_image,
                    "encode_s": t_enc,
                    "filter_s": (t_score + t_decide) if res is not None else 0.0,
                },
            )
            if kept or self.opts.save_dropped:
                row["image"], key = image_value(self.opts.images, png, s.sample_id, s.label, attempt_id, kept)
                if key is not None:  # the files layout: a PNG object beside the row's bytes
                    self.store.put(key, png)
                    keys.append(key)
        return rows, keys

    def _base_row(
        self, s: Sample, attempt_id: str, loras: list[dict[str, Any]], batch_size: int, now: datetime
    ) -> dict[str, Any]:
        ident = self.renderer.identity
        return {
            "sample_id": s.sample_id,
            "shard_id": "",
            "run_id": self.run_id,
            "attempt_id": attempt_id,
            "entry_id": s.entry_id,
            "index": s.index,
            "label": s.label,
            "tags": list(s.tags),
            "prompt": s.prompt,
            "negative_prompt": s.negative_prompt,
            "seed": s.seed,
            "sampler": s.sampler,
            "steps": s.steps,
            "cfg_scale": s.cfg_scale,
            "width": s.width,
            "height": s.height,
            "batch_size": batch_size,
            "loras": [
                {"name": lr["name"], "path": lr["path"], "scale": lr["scale"], "sha256": lr["sha256"]}
                for lr in loras
            ],
            "model_id": ident.model_id,
            "model_sha256": ident.sha256,
            "model_hash": ident.short_hash,
            "status": "ok",
            "error": None,
            "image": None,
            "image_sha256": None,
            "kept": False,
            "drop_reasons": [],
            "scores": empty_scores(),
            "skin_tone": None,
            "timings": None,
            "actor": self.actor,
            "node": self.node,
            "device": self.renderer.device_name,
            "noise": self.renderer.noise_source,
            "created_at": now,
            "prompt_tokens": token_count(s.prompt),
            "prompt_truncated": is_truncated(s.prompt),
        }

    def close(self) -> None:
        self._post.shutdown(wait=True)
