"""The run-wide duplicate decision (`dermgen.filters.run_index`): one process, and actors sharing a log."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from dermgen.filters import build_filter
from dermgen.filters.dedup import fingerprint, iter_image_files, read_rgb
from dermgen.filters.run_index import DuplicateCandidate, DuplicateLog, RunIndex
from filterlab.copies import hard_copy

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "memorisation"
BOUND = 0.89  # the default duplicate_max


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [read_rgb(f) for f in iter_image_files(ASSETS)][:4]


@pytest.fixture(scope="module")
def copies(images) -> list[np.ndarray]:
    """A hard copy of each image: cropped, resized, colour-shifted, turned and JPEG re-encoded."""
    rng = np.random.default_rng(7)
    return [hard_copy(img, rng, orientation=k + 3) for k, img in enumerate(images)]


def cand(sample_id: str, image: np.ndarray, bound: float | None = BOUND, eligible: bool = True):
    return DuplicateCandidate(sample_id, fingerprint(image), bound, eligible)


def test_one_process_keeps_the_first_of_two_copies(images, copies):
    index = RunIndex()
    first = index.check_and_add([cand(f"a{k}", img) for k, img in enumerate(images)])
    assert max(first) <= BOUND, "distinct images are not duplicates of each other"
    again = index.check_and_add([cand(f"b{k}", c) for k, c in enumerate(copies)])
    assert min(again) > BOUND, f"every turned, cropped copy is caught: {again}"
    assert len(index) == len(images), "dropped copies are not added"


def test_a_copy_within_one_batch_is_caught(images, copies):
    sims = RunIndex().check_and_add([cand("a", images[0]), cand("b", copies[0])])
    assert sims[0] == 0.0 and sims[1] > BOUND


def test_a_sample_rendered_again_is_not_its_own_duplicate(images):
    index = RunIndex()
    index.check_and_add([cand("s1", images[0])])
    assert index.check_and_add([cand("s1", images[0])]) == [0.0]
    assert index.check_and_add([cand("s2", images[0])])[0] > BOUND
    assert len(index) == 1


def test_ineligible_images_are_scored_not_added(images, copies):
    index = RunIndex()
    assert index.check_and_add([cand("a", images[0], eligible=False)]) == [0.0]
    assert len(index) == 0
    index.check_and_add([cand("b", images[1])])
    assert index.check_and_add([cand("c", copies[1], eligible=False)])[0] > BOUND
    assert len(index) == 1


def test_no_bound_keeps_and_adds(images, copies):
    index = RunIndex()
    index.check_and_add([cand("a", images[0])])
    sims = index.check_and_add([cand("b", copies[0], bound=None)])
    assert sims[0] > BOUND and len(index) == 2


def test_two_actors_one_log_the_later_copy_is_dropped(images, copies):
    """Neither replica has seen the other's image: the log's order decides, and the loser withdraws."""
    log = DuplicateLog()
    a, b = RunIndex("a", log), RunIndex("b", log)
    assert a.check_and_add([cand("x", images[0])])[0] <= BOUND
    # b's replica is empty: the image passes locally, then meets x among the entries placed before it
    assert b.check_and_add([cand("y", copies[0])])[0] > BOUND
    assert b.withdrawn == 1 and log.stats() == {"entries": 2, "withdrawn": 1}
    # a learns of y's withdrawal with its next append: y never drops anything
    a.check_and_add([cand("z", images[1])])
    c = RunIndex("c", log)
    assert c.check_and_add([cand("w", copies[1])])[0] > BOUND, "z is in the log for a new actor"
    assert c.check_and_add([cand("v", images[2])])[0] <= BOUND


def test_replicas_catch_up_without_racing(images, copies):
    """Entries an actor received with an append are matched locally from then on (no log round trip)."""
    log = DuplicateLog()
    a, b = RunIndex("a", log), RunIndex("b", log)
    a.check_and_add([cand("x0", images[0])])
    b.check_and_add([cand("y0", images[1])])  # b receives x0 here
    assert len(b) == 2
    assert b.check_and_add([cand("y1", copies[0])])[0] > BOUND
    assert b.withdrawn == 0, "caught by the replica, before any append"


def test_a_retried_sample_on_another_actor_is_not_its_own_duplicate(images):
    """An actor appends a sample and is lost before committing; another actor renders it again."""
    log = DuplicateLog()
    RunIndex("lost", log).check_and_add([cand("s", images[0])])
    again = RunIndex("new", log)
    assert again.check_and_add([cand("s", images[0])]) == [0.0]
    assert again.withdrawn == 0 and log.stats()["entries"] == 1


@pytest.mark.parametrize("actors", [4])
def test_concurrent_actors_keep_exactly_one_of_each_group(images, copies, actors):
    """Every actor holds a different copy of the same images at the same moment: one of each is kept."""
    rng = np.random.default_rng(3)
    groups = [[img] + [hard_copy(img, rng, orientation=k) for k in range(actors - 1)] for img in images]
    log = DuplicateLog()
    barrier = threading.Barrier(actors)
    kept: list[tuple[int, int]] = []
    lock = threading.Lock()

    def actor(j: int) -> None:
        index = RunIndex(f"gen-{j}", log)
        batch = [cand(f"g{g}-{j}", group[j]) for g, group in enumerate(groups)]
        barrier.wait()
        sims = index.check_and_add(batch)
        with lock:
            kept.extend((g, j) for g, s in enumerate(sims) if s <= BOUND)

    threads = [threading.Thread(target=actor, args=(j,)) for j in range(actors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_group = sorted(g for g, _ in kept)
    assert per_group == list(range(len(images))), f"kept (group, actor): {sorted(kept)}"


def test_seeded_index_drops_copies_of_committed_images(images, copies):
    log = DuplicateLog()
    assert log.seed([("old", fingerprint(images[0]))]) == 1
    assert RunIndex("a", log).check_and_add([cand("new", copies[0])])[0] > BOUND
    local = RunIndex()
    assert local.seed([("old", fingerprint(images[0]))]) == 1
    assert local.check_and_add([cand("new", copies[0])])[0] > BOUND


def test_filter_with_its_run_index_pickles(images):
    flt = build_filter("default")
    flt.evaluate(images[0])
    clone = pickle.loads(pickle.dumps(flt))
    assert len(clone.run_index) == len(flt.run_index) == 1


def test_decide_many_names_the_duplicate_reason(images, copies):
    flt = build_filter("default")
    scored = [flt.score(images[0]), flt.score(copies[0])]
    results = flt.decide_many([("a", scored[0]), ("b", scored[1])])
    assert results[0].scores["duplicate"] == 0.0
    assert "duplicate>0.89" in results[1].reasons and not results[1].kept
    with pytest.raises(ValueError, match="skin_tones"):
        flt.decide_many([("c", scored[0])], skin_tones=[None, None])
