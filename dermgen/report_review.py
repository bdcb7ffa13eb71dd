"""The review section of `dermgen report`: flip keep/drop on images and download the labels.

Every image of the section (all of a small run, a fixed sample of a large one: see
:mod:`dermgen.report_data`) starts with the filter's decision; a click flips it. "Download labels"
saves a JSON file that ``dermgen filter calibrate`` reads (:func:`dermgen.filters.calibrate.load_labels`)::

    {"dermgen_labels": 1, "run": "<run uri>", "run_id": "...",
     "labels": [{"sample_id": "...", "path": "images/...png", "kept": true, "filter_kept": false,
                 "scores": {"ink": 0.01, ...}}, ...]}

``path`` is the image's key relative to the run (calibrate resolves it against ``run`` when the
scores are missing); ``scores`` are the row's scores, so calibrate fits without reading the images.
Plain inline JavaScript: no server, no external resource, works from a file:// page offline.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from dermgen.report_data import RunData, Thumb

__all__ = ["REVIEW_CSS", "review_attrs", "review_html"]

LABELS_VERSION = 1

REVIEW_CSS = """
.review-bar{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:0 0 10px}
.review-bar button{font:13px inherit;padding:5px 12px;border:1px solid #9ca3af;border-radius:4px;background:#fff;cursor:pointer}
.review-bar button.primary{background:#1565c0;color:#fff;border-color:#1565c0}
figure.rv{cursor:pointer;border-width:3px}
figure.rv.keep{border-color:#2e7d32} figure.rv.drop{border-color:#c62828;background:#fdecea}
figure.rv.changed{outline:3px dashed #b45309;outline-offset:1px}
figure.rv .flip{font-weight:600} figure.rv.keep .flip{color:#2e7d32} figure.rv.drop .flip{color:#c62828}
"""

SCRIPT = """
(function () {
  var section = document.getElementById('review');
  if (!section) return;
  var figs = Array.prototype.slice.call(section.querySelectorAll('figure.rv'));
  function show(f) {
    var kept = f.getAttribute('data-kept') === '1';
    f.classList.toggle('keep', kept);
    f.classList.toggle('drop', !kept);
    f.classList.toggle('changed', f.getAttribute('data-kept') !== f.getAttribute('data-filter'));
    f.querySelector('.flip').textContent = kept ? 'keep' : 'drop';
  }
  function count() {
    var kept = 0, changed = 0;
    figs.forEach(function (f) {
      if (f.getAttribute('data-kept') === '1') kept++;
      if (f.getAttribute('data-kept') !== f.getAttribute('data-filter')) changed++;
    });
    document.getElementById('review-counts').textContent =
      figs.length + ' images: ' + kept + ' keep, ' + (figs.length - kept) + ' drop, ' +
      changed + ' changed from the filter';
  }
  figs.forEach(function (f) {
    f.addEventListener('click', function () {
      f.setAttribute('data-kept', f.getAttribute('data-kept') === '1' ? '0' : '1');
      show(f);
      count();
    });
    show(f);
  });
  document.getElementById('review-reset').addEventListener('click', function () {
    figs.forEach(function (f) { f.setAttribute('data-kept', f.getAttribute('data-filter')); show(f); });
    count();
  });
  document.getElementById('review-download').addEventListener('click', function () {
    var labels = figs.map(function (f) {
      var scores = f.getAttribute('data-scores');
      return {
        sample_id: f.getAttribute('data-sid'),
        path: f.getAttribute('data-path') || null,
        kept: f.getAttribute('data-kept') === '1',
        filter_kept: f.getAttribute('data-filter') === '1',
        scores: scores ? JSON.parse(scores) : null
      };
    });
    var doc = {dermgen_labels: VERSION, run: section.getAttribute('data-run'),
               run_id: section.getAttribute('data-run-id'), labels: labels};
    var blob = new Blob([JSON.stringify(doc, null, 1)], {type: 'application/json'});
    var a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'labels-' + (section.getAttribute('data-run-id') || 'run') + '.json';
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  });
  count();
})();
""".replace("VERSION", str(LABELS_VERSION))


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _scores_json(scores: dict[str, Any] | None) -> str:
    """The row's scores as JSON (finite numbers only; "" when none was computed)."""
    clean = {
        k: float(v)
        for k, v in (scores or {}).items()
        if v is not None and isinstance(v, (int, float)) and math.isfinite(v)
    }
    return json.dumps(clean, sort_keys=True) if clean else ""


def _figure(t: Thumb) -> str:
    r = t.row
    kept = "1" if r.get("kept") else "0"
    reasons = ", ".join(r.get("drop_reasons") or [])
    cap = f"<span>{_e(r['sample_id'])}</span>"
    if reasons:
        cap += f'<br><span class="r">{_e(reasons)}</span>'
    cap += '<br><span class="flip"></span>'
    return (
        f'<figure class="t rv" data-sid="{_e(r["sample_id"])}" data-path="{_e(t.path or "")}" '
        f'data-kept="{kept}" data-filter="{kept}" data-scores="{_e(_scores_json(r.get("scores")))}" '
        f'title="{_e(r.get("prompt") or "")}"><img src="{t.uri}" alt="{_e(r["sample_id"])}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def review_html(data: RunData) -> tuple[str, str]:
    """(section content, script) of the review section; ("...no images...", "") when there is nothing."""
    if not data.review:
        return '<p class="note">No rendered images to review.</p>', ""
    n = len(data.review)
    scope = (
        f"all {n:,d} rendered images of the run"
        if n >= data.reviewable
        else f"{n:,d} of {data.reviewable:,d} rendered images, a fixed sample (half kept, half dropped)"
    )
    content = (
        f'<p class="note">Click an image to flip its decision (green: keep, red: drop; dashed: changed '
        f"from the filter's). Shown: {scope}. Then download the labels and fit the filter to them: "
        "<code>dermgen filter calibrate labels.json --output profile.yaml</code>, and use "
        "<code>--filter profile.yaml</code> with <code>generate</code> or <code>filter</code>.</p>"
        '<div class="review-bar"><button type="button" class="primary" id="review-download">'
        'download labels (JSON)</button><button type="button" id="review-reset">reset to the filter</button>'
        '<span id="review-counts" class="note"></span></div>'
        f'<div class="sheet">{"".join(_figure(t) for t in data.review)}</div>'
    )
    return content, SCRIPT


def review_attrs(data: RunData) -> str:
    """The attributes of the review <section>: the run's uri and id for the labels file."""
    return f' data-run="{_e(data.uri)}" data-run-id="{_e(data.run.get("run_id", ""))}"'
