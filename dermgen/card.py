"""The dataset card of a run: ``README.md`` at the run root, in the Hugging Face dataset-card format.

A YAML header (license, task categories, size category, tags, and ``configs`` whose data files are the
run's shards, so ``datasets.load_dataset(<run folder>)`` reads them) and a body that says how the data
was made: model and adapters with their hashes, manifest and its hash, filter and thresholds, counts
kept / dropped per label, entry and skin-tone group, known limitations and intended use.

Written at the end of every run (``dermgen.run.finalize_run``) and refreshable at any time with
``dermgen card <run>``; this module is the only writer of the file.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from typing import Any

import yaml

from dermgen import __version__
from dermgen.errors import StoreError
from dermgen.rundir import RunDir
from dermgen.rundir.layout import CARD_MD
from dermgen.skintone import SKIN_TONES, UNMEASURED, distribution_status, read_tone_rows, tone_counts
from dermgen.store import Store

__all__ = ["CARD_FILE", "DEFAULT_LICENSE", "build_card", "size_category", "write_card"]

log = logging.getLogger(__name__)

CARD_FILE = CARD_MD
DEFAULT_LICENSE = "other"  # the weights' terms decide; set it with `dermgen card --license` before publishing
DATA_FILES = "shards/*.parquet"
_ROW_COLUMNS = ("model_id", "model_sha256", "model_hash", "loras")


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` value for ``n`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    for limit, name in ((1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if n < limit:
            return name
    return "n>1T" if n >= 10**12 else "100M<n<1B" if n < 10**9 else "1B<n<10B"


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "| " + " | ".join(headers) + " |\n|" + "|".join("---" for _ in headers) + "|\n"
    return head + "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows)


def _tally(rows: list[dict[str, Any]], key: str) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        c = out[r[key]]
        c["rows"] += 1
        c["failed" if r.get("status") != "ok" else "kept" if r.get("kept") else "dropped"] += 1
    return dict(sorted(out.items()))


def _thresholds(filter_binding: dict[str, Any]) -> dict[str, float | None]:
    from dermgen.filters.rule import FilterConfig, config_with_overrides

    return config_with_overrides(FilterConfig(), filter_binding.get("overrides") or {}).thresholds()


def build_card(
    run: dict[str, Any],
    summary: dict[str, Any] | None,
    rows: list[dict[str, Any]],
    license: str = DEFAULT_LICENSE,
) -> str:
    """The card's text for a run (``run.json``, ``summary.json`` or None, committed rows)."""
    manifest = run.get("manifest") or {}
    binding = run.get("binding") or {}
    env = run.get("environment") or {}
    name = manifest.get("name", "dermgen-run")
    header = {
        "license": license,
        "pretty_name": f"dermgen synthetic skin lesions: {name}",
        "task_categories": ["image-classification"],
        "size_categories": [size_category(len(rows))],
        "tags": ["synthetic", "dermatology", "skin-lesion", "medical-imaging", "stable-diffusion", "dermgen"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILES}]}],
    }
    by_label, by_entry = _tally(rows, "label"), _tally(rows, "entry_id")
    tones = tone_counts(rows)
    kept = sum(c["kept"] for c in by_label.values())

    models = sorted({(r.get("model_id"), r.get("model_hash"), r.get("model_sha256")) for r in rows}, key=str)
    model_lines = [f"- `{m}` (short hash `{h}`, sha256 `{s}`)" for m, h, s in models if m] or [
        f"- `{run.get('config', {}).get('model') or manifest.get('model')}` ({binding.get('model')})"
    ]
    adapters = {}
    for r in rows:
        for lr in r.get("loras") or []:
            adapters[(lr.get("path"), lr.get("sha256"))] = lr.get("scale")
    adapter_lines = [f"- `{p}` × {s:g} (sha256 `{h}`)" for (p, h), s in sorted(adapters.items(), key=str)]
    filt = binding.get("filter") or {}
    if filt.get("spec") == "none":
        filter_text = "Off (`--filter none`): every rendered image was kept; no scores were computed."
    else:
        unused = {"clip"} | (set() if filt.get("reference_dir") else {"memorisation"})
        clip_model = (run.get("config") or {}).get("clip_model")
        on = {
            k: v
            for k, v in _thresholds(filt).items()
            if v is not None and (k not in unused or clip_model and k == "clip")
        }
        filter_text = (
            f"Profile `{filt.get('spec', 'default')}`"
            + (f" with overrides `{json.dumps(filt.get('overrides'))}`" if filt.get("overrides") else "")
            + (", memorisation checked against a reference folder" if filt.get("reference_dir") else "")
            + ". Thresholds: "
            + ", ".join(f"`{k}` {v:g}" for k, v in on.items())
            + "."
        )
        per_entry = [
            f"`{e['id']}`: {json.dumps(e['filter'])}" for e in manifest.get("entries", []) if e.get("filter")
        ]
        if per_entry:
            filter_text += " Per-entry overrides: " + "; ".join(per_entry) + "."
        expects = [
            f"`{e['id']}`: {', '.join(e['expect']['skin_tone'])}"
            for e in manifest.get("entries", [])
            if e.get("expect")
        ]
        if expects:
            filter_text += (
                " Skin tone is measured as the Individual Typology Angle of the skin around the lesion; "
                "entries that expect groups drop other images (reason `skin_tone`): "
                + "; ".join(expects)
                + "."
            )

    def counts(table: dict[str, Counter]) -> list[list[Any]]:
        return [[k, c["rows"], c["kept"], c["dropped"], c["failed"]] for k, c in table.items()]

    used = [g for g in (*SKIN_TONES, UNMEASURED) if any(g in c for c in tones["kept_by_label"].values())]
    tone_rows = [[k] + [c.get(g, 0) for g in used] for k, c in tones["kept_by_label"].items()]
    entry_tone_rows = [[k] + [c.get(g, 0) for g in used] for k, c in tones["kept_by_entry"].items()]
    dist = distribution_status(manifest, tones)
    dist_lines = [
        f"- {d['label'] or 'all labels'}: {'+'.join(d['skin_tone'])} at least {d['min_fraction']:g} of kept: "
        f"measured {d['fraction']:.3f} ({d['kept_inside']} of {d['kept']}), "
        + ("met" if d["met"] else f"**shortfall of {d['shortfall']} image(s)**")
        for d in dist
    ]
    shortfall = {k: v for k, v in ((summary or {}).get("entries") or {}).items() if v.get("shortfall")}
    status = (
        "in progress (no summary.json yet)"
        if summary is None
        else "complete"
        if summary.get("complete")
        else "finished with a shortfall: "
        + ", ".join(f"{k} short by {v['shortfall']}" for k, v in shortfall.items())
    )
    body = [
        f"# {header['pretty_name']}",
        "",
        f"Synthetic dermoscopy-style skin-lesion images (labels: {', '.join(by_label) or 'none yet'}) made by "
        f"dermgen {env.get('dermgen_version', __version__)} from the prompt manifest "
        f"`{name}`. {kept:,d} of {len(rows):,d} rendered images passed the filter (`kept` column). "
        f"Run `{run.get('run_id', '?')}`, created {run.get('created_at', '?')}; status: {status}.",
        "",
        "Every image is machine-generated: each PNG carries an XMP packet with the IPTC digital source type "
        "`trainedAlgorithmicMedia` and the web UI's `parameters` chunk (prompt, seed, sampler, model hash).",
        "",
        "## Loading",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("path/to/this/run", split="train")   # every row; images as PIL',
        'kept = ds.filter(lambda r: r["kept"])                              # the curated set',
        "```",
        "",
        "The PNG bytes are in the shards' `image` column"
        + (
            "; there are no separate image files (image layout `parquet`)."
            if run.get("images") == "parquet"
            else ", and each is also a file under `images/` (image layout `files`)."
        ),
        "",
        "## How it was generated",
        "",
        "Model:",
        *model_lines,
        "",
        "Adapters (LoRA): " + ("none" if not adapter_lines else ""),
        *adapter_lines,
        "",
        f"Manifest: `{name}` (sha256 `{binding.get('manifest_sha256', '?')}`), run seed {binding.get('run_seed')}, "
        f"limit {binding.get('limit')}, size {binding.get('size')}, cap factor {binding.get('cap_factor')}. "
        f"dermgen {env.get('dermgen_version', '?')}, git commit `{env.get('git_commit') or 'unknown'}`.",
        "",
        f"Filter: {filter_text}",
        "",
        "## Counts",
        "",
        "Per label:",
        "",
        _md_table(["label", "rendered", "kept", "dropped", "failed"], counts(by_label)),
        "Per entry:",
        "",
        _md_table(["entry", "rendered", "kept", "dropped", "failed"], counts(by_entry)),
        "Kept images per label and measured skin-tone group (ITA):",
        "",
        _md_table(["label", *used], tone_rows) if used else "No skin tone was measured.\n",
        "Kept images per entry and skin-tone group:",
        "",
        _md_table(["entry", *used], entry_tone_rows) if used else "-\n",
    ]
    if tones["dropped_skin_tone_by_entry"]:
        body += [
            "Dropped for showing another skin tone than the entry expects: "
            + ", ".join(f"`{k}` {n}" for k, n in tones["dropped_skin_tone_by_entry"].items())
            + ".",
            "",
        ]
    if dist_lines:
        body += ["Skin-tone distribution targets of the manifest:", "", *dist_lines, ""]
    body += [
        "## Intended use",
        "",
        "Research on skin-lesion classification and data augmentation (for example mixing synthetic images "
        "with real ones to train and test classifiers, or studying their behaviour across skin tones). "
        "**Not for diagnosis**, not for clinical decisions, and not a substitute for real clinical data.",
        "",
        "## Known limitations",
        "",
        "- The labels are the prompts' labels, not a pathologist's: an image made for `malignant` is not a "
        "verified melanoma.",
        "- The filter removes obvious noise (ink, blur, rulers, off-domain frames, duplicates) by thresholds; "
        "it does not judge medical plausibility. Dropped images stay in the shards with `kept` false.",
        "- Skin tone is the Individual Typology Angle of the skin around the lesion, measured on the image "
        "as rendered: dermoscope lighting, colour casts and vignetting shift it, and it is not a "
        "Fitzpatrick type. The generating model was fine-tuned on public dermoscopy data dominated by "
        "light skin, so darker groups can be rare or less realistic.",
        "- Generative models can reproduce their training images; the `memorisation` score is only "
        "computed when a reference folder was given.",
        "",
    ]
    front = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(body)


def write_card(store: Store | str, license: str = DEFAULT_LICENSE) -> str:
    """Write (or refresh) ``README.md`` of the run at ``store``; returns its path or URL."""
    rd = RunDir.open(store)
    store = rd.store
    try:
        existing = store.get(CARD_FILE)
    except KeyError:
        existing = None
    if existing is not None and b"dermgen synthetic skin lesions" not in existing[:4096]:
        raise StoreError(
            f"{store.url(CARD_FILE)} exists and is not a dermgen dataset card: left as it is (a run never "
            "touches what it did not write)"
        )
    run = rd.info().model_dump(mode="json")
    rows = read_tone_rows(rd, extra=_ROW_COLUMNS)
    store.put(CARD_FILE, build_card(run, rd.summary(), rows, license).encode())
    where = store.local_path(CARD_FILE) or store.url(CARD_FILE)
    log.info("dataset card at %s", where)
    return where
