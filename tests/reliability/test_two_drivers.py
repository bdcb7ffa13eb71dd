"""Two drivers on one output, each killed (SIGKILL) and restarted at random: shard claims split the work,
a dead driver's claims expire (or, for its successor on the same host, die with its process), and the
run ends with every planned sample exactly once, no duplicates, no stray PNGs, no claims left behind.

The two driver slots get distinct claim host identities (`DERMGEN_CLAIM_HOST`), as if on two machines:
a slot's restarted driver takes over its predecessor's claims at once (same host, dead pid); the other
slot must wait for them to expire (the short lease below).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dermgen.rundir import RunDir
from dermgen.rundir.claims import HOST_ENV, read_claims
from dermgen.store import open_store

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_MANIFEST = str(REPO_ROOT / "manifests" / "smoke.yaml")  # what the `gen` fixture renders
PER_ENTRY = 16
SHARD_SIZE = 2
SHARDS = 2 * PER_ENTRY // SHARD_SIZE
LEASE_S, RENEW_S = "3", "0.5"

MANIFEST = f"""\
name: two-drivers
model: tiny
defaults: {{samplers: [Euler], steps: 2, cfg_scale: 7, size: 64}}
entries:
  - {{id: benign_mole, label: benign, prompt: benign mole, count: {PER_ENTRY}}}
  - {{id: malignant_mole, label: malignant, prompt: malignant mole, count: {PER_ENTRY}}}
"""


class Slot:
    """One driver position: the same command and host identity each time it is (re)started."""

    def __init__(self, name: str, command: list[str], logs: Path) -> None:
        self.name = name
        self.command = command
        self.logs = logs
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_path: Path | None = None

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.logs / f"{self.name}-{self.starts}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env[HOST_ENV] = f"test-host-{self.name}"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            self.proc.kill()  # SIGKILL: no cleanup, claims left behind
            self.proc.wait(timeout=30)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""


def committed(store) -> int:
    return len(RunDir(store).shard_ids())


def claim_pids(store) -> set[int]:
    """Process ids of the drivers holding a claim on a shard not committed yet (a claim on a committed
    shard is only waiting for its release: killing its driver then leaves nothing to take over)."""
    done = set(RunDir(store).shard_ids())
    return {
        claim.pid
        for shard_id, (claim, _) in read_claims(store).items()
        if claim is not None and shard_id not in done
    }


def run_two_drivers(tmp_path: Path, output: str, seed: int, kills: int = 2) -> dict:
    """Start two drivers on `output`, kill and restart one at random `kills` times while shards remain,
    then let both finish. Returns what happened (printed by the caller)."""
    manifest = tmp_path / "two_drivers.yaml"
    manifest.write_text(MANIFEST)
    command = [
        sys.executable,
        str(REPO_ROOT / "jobs" / "generate_6k.py"),
        "--manifest",
        str(manifest),
        "--model",
        "tiny",
        "--size",
        "64",
        "--filter",
        "none",
        "--shard-size",
        str(SHARD_SIZE),
        "--batch-size",
        str(SHARD_SIZE),
        "--claim-lease-s",
        LEASE_S,
        "--claim-renew-s",
        RENEW_S,
        "--no-ray",
        "--output",
        output,
    ]
    rng = random.Random(seed)
    store = open_store(output)
    slots = [Slot(name, command, tmp_path) for name in ("a", "b")]
    for slot in slots:
        slot.start()
    events = []
    try:
        # each kill lands after a random number of further commits, on a driver holding a claim (so it
        # dies mid-shard and leaves a claim behind), while work remains
        triggers = sorted(rng.sample(range(2, SHARDS - 6), kills))
        for trigger in triggers:
            deadline = time.time() + 240
            while True:
                assert time.time() < deadline, f"no progress to {trigger} commits: " + slots[0].tail()
                for slot in slots:
                    assert slot.running() or slot.proc.returncode == 0, f"{slot.name} failed:\n{slot.tail()}"
                if committed(store) >= trigger:
                    pids = claim_pids(store)
                    live = [s for s in slots if s.running() and s.proc.pid in pids]
                    if live or not any(s.running() for s in slots):
                        break
                time.sleep(0.1)
            if not live:
                break
            victim = rng.choice(live)
            victim.kill()
            events.append(f"killed {victim.name} at {committed(store)}/{SHARDS} committed")
            time.sleep(rng.uniform(0, 1.0))
            victim.start()
        for slot in slots:
            rc = slot.proc.wait(timeout=300)
            assert rc == 0, f"driver {slot.name} (start {slot.starts}) exited {rc}:\n{slot.tail()}"
    finally:
        for slot in slots:
            slot.kill()
    logs = "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.log")))
    return {
        "events": events,
        "starts": {s.name: s.starts for s in slots},
        "taken_over": logs.count("took over the expired claim"),
        "store": store,
    }


def check_two_driver_run(result: dict, exactly_once) -> None:
    store = result["store"]
    listing = RunDir(store).listing()
    print(
        f"{store.uri}: {result['events']}, starts {result['starts']}, "
        f"claims taken over {result['taken_over']}, committed {len(listing.shards)}/{SHARDS}"
    )
    stats = exactly_once(store, 2 * PER_ENTRY)  # planned == written, no duplicate ids, verify ok
    assert stats["duplicates"] == 0 and stats["written"] == stats["planned"]
    assert len(listing.shards) == SHARDS
    assert not listing.claims, f"claims left behind: {listing.claims}"
    assert result["taken_over"] >= 1, "a killed driver's claim was taken over"
    assert not listing.temps, listing.temps
    refs = RunDir(store).referenced_images()
    assert set(listing.images) == refs, "every PNG on the store is referenced by exactly the committed rows"


@pytest.mark.slow
def test_two_drivers_killed_at_random_on_a_local_output(tmp_path, exactly_once):
    result = run_two_drivers(tmp_path, str(tmp_path / "run"), seed=15)
    check_two_driver_run(result, exactly_once)


@pytest.mark.slow
def test_two_drivers_killed_at_random_on_s3(tmp_path, s3_bucket, exactly_once):
    result = run_two_drivers(tmp_path, f"s3://{s3_bucket}/run", seed=16)
    check_two_driver_run(result, exactly_once)


def _foreign_claim(store, shard_id: str, run_id: str, expires_in: float) -> None:
    from dermgen.rundir import claim_key
    from dermgen.rundir.claims import Claim

    claim = Claim.new(run_id, shard_id, "other-driver", 30.0).model_copy(
        update={"host_id": "another-machine", "expires_at": time.time() + expires_in}
    )
    store.put(claim_key(shard_id), claim.to_bytes())


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_sweep_spares_the_pngs_of_a_shard_another_driver_holds(backend, request, commit_race):
    """Another driver has written PNGs of a shard it has not committed yet: while its claim is live the
    sweep leaves them (and every temp file) alone; once the claim is stale, they and the claim go."""
    from dermgen.store import LocalStore

    store = LocalStore(request.getfixturevalue("run_copy"))
    if backend == "s3":
        store = request.getfixturevalue("s3_run_copy")
    rd = RunDir(store)
    run_id = rd.info().run_id
    shard_id = "malignant_mole-0000002-0000004"
    rows = commit_race.uncommit(store, shard_id)
    _, _, pngs = commit_race.new_attempt(store, rows)  # the other driver's PNGs, not yet committed
    _foreign_claim(store, shard_id, run_id, expires_in=30)
    if backend == "local":
        temp = Path(store.local_path("images/kept/malignant/.x.png.abc.tmp"))
        temp.write_bytes(b"half-written")

    assert rd.sweep_orphans(run_id) == []
    assert all(store.exists(k) for k in pngs) and rd.listing().claims == [shard_id]
    if backend == "local":
        assert temp.exists(), "temp files are left alone while another driver holds a claim"

    _foreign_claim(store, shard_id, run_id, expires_in=-1)  # that driver died: its claim expired
    removed = rd.sweep_orphans(run_id)
    assert set(pngs) <= set(removed) and not any(store.exists(k) for k in pngs)
    assert rd.listing().claims == [] and not rd.listing().temps


@pytest.mark.parametrize(
    "use_ray", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["in-process", "ray"]
)
def test_a_shard_under_another_drivers_claim_waits_for_it(use_ray, request, tmp_path, gen, exactly_once):
    """A shard another driver holds is passed over; the driver renders the rest, waits, and takes the shard
    over once that claim expires, with either runner."""
    import threading

    from dermgen.config import make_config
    from dermgen.run import prepare_run

    if use_ray:
        request.getfixturevalue("ray_local")
    out = tmp_path / "run"
    settings = {"claim_lease_s": 5.0, "claim_renew_s": 0.5}
    prepared = prepare_run(
        make_config(
            manifest=SMOKE_MANIFEST,
            model="tiny",
            output=str(out),
            limit=8,
            size=64,
            filter="none",
            shard_size=2,
            batch_size=2,
            **settings,
        )
    )
    prepared.close()
    run_id, store = prepared.run_id, prepared.store
    held = "benign_mole-0000000-0000002"
    _foreign_claim(store, held, run_id, expires_in=600)

    def expire_when_the_rest_is_done() -> None:
        deadline = time.time() + 300
        while committed(store) < 3 and time.time() < deadline:
            time.sleep(0.1)
        _foreign_claim(store, held, run_id, expires_in=-1)  # that driver died

    watcher = threading.Thread(target=expire_when_the_rest_is_done, daemon=True)
    watcher.start()
    summary = gen(out, use_ray=use_ray, num_actors=1, **settings)
    watcher.join(timeout=10)
    assert summary["claims_taken_over"] == 1 and summary["complete"]
    assert RunDir(store).listing().claims == []
    exactly_once(store, 8)
