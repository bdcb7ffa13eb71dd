"""Key layout of a run under its root, and the one classifier of what a listing holds.

    run.json                                   run provenance and the plan binding
    summary.json                               per-entry targets, kept counts, committed shard list
    shards/<entry>-<start:07d>-<end:07d>.parquet   one row per sample; its presence = committed
    images/<kept|dropped>/<label>/<sample_id>.<attempt_id>.png
    claims/<shard_id>.json                     a driver's expiring claim on a shard it renders (`claims.py`)
    README.md                                  the run's dataset card (`dermgen card`)
    report/...                                 `dermgen report`'s default output folder

Only keys of exactly these shapes are the run's own. Anything else found under the root (nested or
renamed Parquet copies, temp files, unrelated files) is a stray: reported by verify, ignored with a
warning by the loaders, and never deleted by the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RUN_JSON = "run.json"
SUMMARY_JSON = "summary.json"
CARD_MD = "README.md"
REPORT_PREFIX = "report/"
SHARDS_PREFIX = "shards/"
IMAGES_PREFIX = "images/"
CLAIMS_PREFIX = "claims/"
CLAIM_SUFFIX = ".json"
PARQUET = ".parquet"

_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
SHARD_ID_RE = re.compile(rf"^(?P<entry>{_ID})-(?P<start>\d{{7}})-(?P<end>\d{{7}})$")
IMAGE_KEY_RE = re.compile(
    rf"^images/(?P<kind>kept|dropped)/(?P<label>[A-Za-z0-9_.-]+)/"
    rf"(?P<sample>(?P<entry>{_ID})-(?P<index>\d{{7}}))\.(?P<attempt>[A-Za-z0-9]{{1,64}})\.png$"
)


def shard_key(shard_id: str) -> str:
    return f"{SHARDS_PREFIX}{shard_id}{PARQUET}"


def claim_key(shard_id: str) -> str:
    return f"{CLAIMS_PREFIX}{shard_id}{CLAIM_SUFFIX}"


def parse_claim_key(key: str) -> str | None:
    """The shard id of a well-formed claim key, else None."""
    if not key.startswith(CLAIMS_PREFIX) or not key.endswith(CLAIM_SUFFIX):
        return None
    shard_id = key[len(CLAIMS_PREFIX) : -len(CLAIM_SUFFIX)]
    return shard_id if "/" not in shard_id and parse_shard_id(shard_id) else None


def image_key(sample_id: str, label: str, attempt_id: str, kept: bool) -> str:
    return f"{IMAGES_PREFIX}{'kept' if kept else 'dropped'}/{label}/{sample_id}.{attempt_id}.png"


def parse_shard_id(shard_id: str) -> tuple[str, int, int] | None:
    """(entry_id, start, end) of a well-formed shard id, else None."""
    m = SHARD_ID_RE.match(shard_id)
    if not m:
        return None
    start, end = int(m["start"]), int(m["end"])
    return (m["entry"], start, end) if end > start else None


def parse_image_key(key: str) -> dict[str, str] | None:
    """The parts of one of the run's own PNG keys (kind, label, sample, entry, index, attempt), else None."""
    m = IMAGE_KEY_RE.match(key)
    return m.groupdict() if m else None


@dataclass
class Listing:
    """What a run's root holds, sorted into the run's own objects and strays."""

    run_json: bool = False
    summary_json: bool = False
    shards: list[str] = field(default_factory=list)  # well-formed shard ids (committed)
    images: list[str] = field(default_factory=list)  # keys of the run's own PNG naming
    strays: list[str] = field(default_factory=list)  # everything else under the root
    temps: list[str] = field(default_factory=list)  # leftover temp files of interrupted writes
    documents: list[str] = field(default_factory=list)  # the run's card and report: its own, never swept
    claims: list[str] = field(default_factory=list)  # shard ids with a claim object (live or expired)

    @property
    def empty(self) -> bool:
        return not (
            self.run_json or self.summary_json or self.shards or self.images or self.strays or self.claims
        )

    @property
    def foreign(self) -> list[str]:
        """Keys that are not part of a dermgen run's layout at all."""
        return [k for k in self.strays if not k.startswith((SHARDS_PREFIX, IMAGES_PREFIX, CLAIMS_PREFIX))]


def classify(keys: list[str], temps: list[str] | None = None) -> Listing:
    """Sort every key under a root into a `Listing` (the one place that decides what is a shard)."""
    out = Listing(temps=sorted(temps or []))
    for key in sorted(keys):
        if key == RUN_JSON:
            out.run_json = True
        elif key == SUMMARY_JSON:
            out.summary_json = True
        elif key.startswith(SHARDS_PREFIX):
            name = key[len(SHARDS_PREFIX) :]
            if name.endswith(PARQUET) and "/" not in name and parse_shard_id(name[: -len(PARQUET)]):
                out.shards.append(name[: -len(PARQUET)])
            else:
                out.strays.append(key)
        elif key.startswith(IMAGES_PREFIX) and parse_image_key(key):
            out.images.append(key)
        elif parse_claim_key(key):
            out.claims.append(parse_claim_key(key))
        elif key == CARD_MD or key.startswith(REPORT_PREFIX):
            out.documents.append(key)
        elif key.startswith("_dermgen/probe-"):
            continue  # a writability probe of a concurrent check_writable
        else:
            out.strays.append(key)
    if not out.run_json:  # a README.md, report/ or claims/ beside no run.json is somebody else's
        out.strays = sorted(out.strays + out.documents + [claim_key(c) for c in out.claims])
        out.documents = []
        out.claims = []
    return out
