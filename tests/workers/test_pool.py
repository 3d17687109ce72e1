"""The Ray shard pool with a real deterministic shard function (the FP model's forward pass on probe
prompts -> one confidence vector per prompt): exact, order-independent merging; a probe actor killed
mid-shard is restarted and its shard retried with an identical merged result; bounded retries;
deterministic input errors fail at once; progress events reach the driver; CPU fallback."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import ray
import torch
from faircalib.workers.pool import (
    PoolCancelled,
    ShardTask,
    WorkerError,
    WorkerResources,
    make_shards,
    resolve_resources,
    run_sharded,
)

from faircalib.errors import DataError

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors get these test functions by value

WINDOW = 8


def setup_forward(model_dir: str, kill_file: str | None = None, fail_file: str | None = None) -> dict:
    from faircalib.models import load_dllm

    torch.set_num_threads(1)
    return {"m": load_dllm(model_dir), "kill": kill_file, "fail": fail_file, "pid": os.getpid()}


def forward_vectors(state: dict, prompts: list[str], report) -> torch.Tensor:
    """(n, WINDOW): teacher confidence (max prob) at each masked answer position, one row per prompt."""
    m = state["m"]
    rows = []
    for i, prompt in enumerate(prompts):
        if state["kill"] and i == len(prompts) // 2:
            try:
                Path(state["kill"]).unlink()  # only one actor wins the file: die once, mid-shard
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)  # like an OOM-killed worker
        if state["fail"] and Path(state["fail"]).exists():
            raise RuntimeError("transient failure")
        ids = m.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids + [m.mask_token_id] * WINDOW])  # (1, P + L)
        with torch.no_grad():
            probs = m.model(x)[0, -WINDOW:].softmax(-1)  # (L, V)
        rows.append(probs.max(-1).values)  # (L,)
        report({"done": i + 1, "of": len(prompts)})
    return torch.stack(rows)  # (n, L)


def bad_input(state, items, report):
    raise DataError("prompt source 'x.jsonl': rows need a prompt field")


PROMPTS = [f"Q: what is {a} + {b}? A:" for a, b in zip(range(10, 21), range(30, 41))]  # 11 prompts


def _task(model_dir, **kw) -> ShardTask:
    return ShardTask(setup=setup_forward, run=forward_vectors, setup_kwargs={"model_dir": str(model_dir), **kw},
                     name="probe")


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The single-process result every distributed run must reproduce exactly."""
    state = setup_forward(str(tiny_model_dir))
    return forward_vectors(state, PROMPTS, lambda e: None)


def test_make_shards_contiguous():
    assert make_shards(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]


def flaky(state, items, report):
    raise RuntimeError("transient failure")


def slow(state, items, report):
    import time

    time.sleep(0.5)
    return items


def test_two_workers_merge_exactly_even_when_an_actor_is_killed_mid_shard(ray_session, tiny_model_dir,
                                                                          reference, tmp_path):
    """Shards of 4 prompts on 2 actors; one actor SIGKILLs itself in the middle of its first shard
    (once). Ray restarts it, the shard is retried, and the merged result equals the single pass."""
    kill = tmp_path / "kill-once"
    kill.write_text("x")
    events = []
    parts = run_sharded(PROMPTS, _task(tiny_model_dir, kill_file=str(kill)), shard_size=4, n_workers=2,
                        max_retries=2, on_event=events.append)
    assert not kill.exists()  # an actor really died
    assert [p.shape[0] for p in parts] == [4, 4, 3]
    assert torch.equal(torch.cat(parts), reference)
    retries = [e for e in events if e["kind"] == "retry"]
    assert len(retries) == 1 and "died" in retries[0]["message"] and retries[0]["attempt"] == 1
    died = retries[0]["shard"]
    progress = [e for e in events if e["kind"] == "progress"]
    done = {}
    for e in progress:
        done.setdefault((e["shard"], e["attempt"]), []).append(e["done"])
    sizes = [4, 4, 3]
    for s, n in enumerate(sizes):  # every shard reported all its rows once, in its successful attempt
        assert sorted(done[(s, 1 if s == died else 0)]) == list(range(1, n + 1))
    assert set(done.get((died, 0), [])) <= set(range(1, sizes[died] // 2 + 1))  # the killed attempt stopped halfway
    assert {e["worker"] for e in progress} == {0, 1}  # both actors did work
    assert [e["done"] for e in events if e["kind"] == "shard_done"] == [1, 2, 3]


def test_retries_are_bounded(ray_session):
    events = []
    with pytest.raises(WorkerError, match=r"probe shard 0 failed after 2 attempts: RuntimeError: transient failure"):
        run_sharded([1, 2], ShardTask(None, flaky, name="probe"), shard_size=2, n_workers=1, max_retries=1,
                    on_event=events.append)
    assert [e["attempt"] for e in events if e["kind"] == "retry"] == [1]


def test_input_errors_fail_at_once(ray_session):
    events = []
    with pytest.raises(DataError, match="rows need a prompt field"):
        run_sharded([1, 2], ShardTask(None, bad_input, name="probe"), shard_size=1, n_workers=1, max_retries=3,
                    on_event=events.append)
    assert not [e for e in events if e["kind"] == "retry"]


def test_cancel_stops_the_pool(ray_session):
    with pytest.raises(PoolCancelled, match="cancelled with 0/3 shards done"):
        run_sharded([1, 2, 3], ShardTask(None, slow, name="probe"), shard_size=1, n_workers=1,
                    should_stop=lambda: True)


def test_gpu_request_falls_back_to_cpu(ray_session):
    res, note = resolve_resources(1.0, 0.5)
    assert res == WorkerResources(1.0, 0.0)
    assert note == "no GPU in the Ray cluster; workers run on CPU (requested 0.5 GPU per worker)"
    assert resolve_resources(2.0, 0.0) == (WorkerResources(2.0, 0.0), None)


# ---------------------------------------------------------------- warm pool
def setup_cached(model_dir: str, tag: str = "") -> dict:
    from faircalib.workers.models import STATS, load_cached

    torch.set_num_threads(1)
    return {"m": load_cached(model_dir), "kill": None, "fail": None, "pid": os.getpid(), "stats": STATS}


def cached_vectors(state: dict, prompts: list[str], report):
    return forward_vectors(state, prompts, report), os.getpid(), dict(state["stats"])


def rendezvous(state, items, report):
    """Wait (up to 120 s) until another shard has also started: True only if both ran at once."""
    import time

    [meeting] = items
    Path(meeting, str(os.getpid())).write_text("here")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(Path(meeting).iterdir())) < 2:
        time.sleep(0.05)
    report({"message": "met"})
    return [(len(list(Path(meeting).iterdir())) >= 2, os.getpid())]


def test_warm_pool_reuses_actors_states_and_models_across_runs(ray_session, tiny_model_dir, reference):
    """Two runs of one task and one run of another task on the same model: the same actor processes
    serve all three, the second run reuses the setup state (warm), the third run's setup finds the
    model in the process cache (one load per process), and every result equals the single pass."""
    from faircalib.workers.pool import WarmPool

    pool = WarmPool(max_idle=4)
    try:
        runs = []
        for tag in ("a", "a", "b"):
            events = []
            task = ShardTask(setup=setup_cached, run=cached_vectors, name="probe",
                             setup_kwargs={"model_dir": str(tiny_model_dir), "tag": tag})
            parts = run_sharded(PROMPTS, task, shard_size=4, n_workers=2, pool=pool, on_event=events.append)
            assert torch.equal(torch.cat([p[0] for p in parts]), reference)
            runs.append((parts, events))
        pids = [{p[1] for p in parts} for parts, _ in runs]
        assert pids[0] == pids[1] == pids[2] and len(pids[0]) == 2  # the same two warm actor processes
        warm = [[e["warm"] for e in events if e["kind"] == "shard_done"] for _, events in runs]
        assert warm[0].count(False) == 2 and all(warm[1])  # one setup per actor, then reused by the next run
        last = {p[1]: p[2] for p in runs[2][0]}
        assert all(st["loads"] == 1 and st["hits"] >= 1 for st in last.values())  # task b: model from the cache
        assert pool.size() == {"idle": 2, "busy": 0, "created": 2}
    finally:
        pool.shutdown()


def test_warm_pool_runs_two_jobs_shards_at_once_and_routes_their_events(ray_session, tmp_path):
    """Two runs on two threads share one pool (2 CPUs): their shards run at the same time on different
    actors (each waits for the other to start), and each run receives only its own progress events."""
    import threading

    from faircalib.workers.pool import WarmPool

    pool = WarmPool()
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    out, events = {}, {"x": [], "y": []}

    def go(name):
        out[name] = run_sharded([str(meeting)], ShardTask(None, rendezvous, name=name), shard_size=1, n_workers=1,
                                pool=pool, on_event=events[name].append)

    try:
        threads = [threading.Thread(target=go, args=(n,)) for n in ("x", "y")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        (x_met, xp), (y_met, yp) = out["x"][0][0], out["y"][0][0]
        assert xp != yp and x_met and y_met  # two actors, both shards running at once
        for name in ("x", "y"):
            prog = [e for e in events[name] if e["kind"] == "progress"]
            assert len(prog) == 1 and prog[0]["message"] == "met"
            assert all(name in e["message"] for e in events[name] if e["kind"] == "pool")
    finally:
        pool.shutdown()


def test_warm_pool_drops_an_actor_that_died(ray_session, tiny_model_dir, reference, tmp_path):
    from faircalib.workers.pool import WarmPool

    kill = tmp_path / "kill-once"
    kill.write_text("x")
    pool = WarmPool()
    try:
        parts = run_sharded(PROMPTS, _task(tiny_model_dir, kill_file=str(kill)), shard_size=4, n_workers=2,
                            max_retries=2, pool=pool)
        assert not kill.exists() and torch.equal(torch.cat(parts), reference)
        assert pool.size()["idle"] == 1  # the restarted actor is not kept warm
    finally:
        pool.shutdown()


def test_warm_pool_never_hands_out_more_actors_than_the_cluster_fits(ray_session):
    """On the 2-CPU test cluster: one job holds an actor; another asking for 2 gets 1 (a second would
    wait for a CPU that only a release frees: the deadlock this accounting prevents); after release,
    both come back as the idle ones, and no new actor is created."""
    from faircalib.workers.pool import WarmPool

    res = WorkerResources(1.0, 0.0)
    pool = WarmPool()
    try:
        a = pool.acquire(1, res)
        b = pool.acquire(2, res)
        assert len(a) == 1 and len(b) == 1 and pool.size() == {"idle": 0, "busy": 2, "created": 2}
        pool.release(a)
        pool.release(b)
        c = pool.acquire(2, res)
        assert len(c) == 2 and {s.id for s in c} == {a[0].id, b[0].id} and pool.size()["created"] == 2
        pool.release(c)
    finally:
        pool.shutdown()
