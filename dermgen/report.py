"""`dermgen report`: one self-contained HTML page that shows what a run made, what it dropped and why.

The page has no external references at all (inline CSS, plots and thumbnails as base64 data URIs), so
it opens from a laptop, an S3 console download or a CI artifact alike and can be moved or mailed as one
file. Sections: overview, counts per label / entry / sampler / steps, kept vs dropped with reasons,
score histograms (kept vs dropped), throughput over time, contact sheets of kept and dropped images
(a bounded, deterministic sample; drop reasons under each dropped image) and provenance.

The run is read through :func:`dermgen.store.open_store`, so ``s3://`` runs work; each shard's Parquet
object is read once, one shard at a time (a bounded number in parallel), and only the sampled images
are decoded: a run of millions of rows is reported in memory that does not grow with it. Plots use matplotlib's object API (no
pyplot, no global backend switch).

Modules: `report_data` (reading the run), `report_plots` (matplotlib figures as data URIs), `report_html`
(the page); this module writes it.
"""

from __future__ import annotations

import logging

from dermgen.errors import ConfigError
from dermgen.report_data import THUMBS_PER_SHEET, RunData, load_run
from dermgen.report_html import render_html
from dermgen.rundir import READ_WORKERS, RunDir
from dermgen.store import open_store

log = logging.getLogger(__name__)

REPORT_FILE = "index.html"


def build_report(
    uri: str, output: str | None = None, *, per_sheet: int = THUMBS_PER_SHEET, workers: int = READ_WORKERS
) -> str:
    """Write `<output>/index.html` for the run at `uri`; returns its path (or URL for an s3:// output).

    `output` defaults to `<uri>/report/` for a local run and is required for an s3:// run (a local
    folder or another s3:// prefix). The run is streamed (`load_run`): memory does not grow with it,
    and `workers` shards and sampled images are read at once.
    """
    rd = RunDir(uri)
    store = rd.store
    if output is None:
        local = store.local_path("report")
        if local is None:
            raise ConfigError(
                f"--output: required for a run on S3 ({uri!r}); give a local folder (or an s3:// prefix) "
                "for index.html"
            )
        output = local
    rd.info()  # StoreError before anything is written if this is not a dermgen run
    out = open_store(output)
    out.check_writable()
    data = load_run(store, per_sheet, workers=workers)
    page = render_html(data).encode()
    out.put(REPORT_FILE, page)
    where = out.local_path(REPORT_FILE) or out.url(REPORT_FILE)
    log.info(
        "report of %d rows (%d + %d thumbnails, %.0f KiB) at %s",
        data.stats.rows,
        len(data.kept_sheet),
        len(data.dropped_sheet),
        len(page) / 1024,
        where,
    )
    return where


__all__ = ["build_report", "load_run", "render_html", "RunData", "THUMBS_PER_SHEET"]
