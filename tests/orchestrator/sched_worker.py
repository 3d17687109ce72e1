"""Test helper (not a test module): stage registries made of real, cheap stage functions that record
every execution, and a scheduler process entry point for the multi-process tests.

    python sched_worker.py DB_URL COUNTS_FILE [--ready FILE --go FILE] [--lease S] [--block FILE]

Each stage appends "<job> <stage> <pid>" to COUNTS_FILE (O_APPEND, one write per line), writes a
file derived from the job config into its stage directory and uploads it (file:// storage), so
exactly-once execution and resume points can be counted from outside.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from faircalib.orchestrator.stages import StageRegistry, StageResult, StageSpec, run_upload

from faircalib.errors import CalibrationError


def record(counts_file: str, job_id: str, stage: str) -> None:
    fd = os.open(counts_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job_id} {stage} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def executions(counts_file: str | Path) -> list[tuple[str, str, str]]:
    p = Path(counts_file)
    return [tuple(line.split()) for line in p.read_text().splitlines()] if p.exists() else []


def make_registry(counts_file: str, *, block_file: str | None = None, fail_file: str | None = None,
                  crash_file: str | None = None, with_upload: bool = True) -> StageRegistry:
    def digest(ctx, stage: str) -> StageResult:
        record(counts_file, ctx.job.id, stage)
        text = json.dumps(ctx.config.to_dict(), sort_keys=True) + stage
        (ctx.stage_dir() / "digest.txt").write_text(hashlib.sha256(text.encode()).hexdigest())
        arts = ctx.upload_stage_dir()
        return StageResult(output={"digest_of": stage}, artifacts=arts, results={stage: len(text)})

    def first(ctx):
        return digest(ctx, "first")

    def second(ctx):
        if block_file:  # hold here while the file exists (the test kills or cancels us meanwhile)
            ctx.emit("progress", "second: started")
            while Path(block_file).exists():
                if ctx.should_stop():
                    from faircalib.service.errors import JobCancelled

                    raise JobCancelled("stopped in stage second")
                time.sleep(0.05)
        if fail_file and Path(fail_file).exists():
            record(counts_file, ctx.job.id, "second-failed")
            raise CalibrationError("block 3: non-finite loss (inf); lower calibration.lr")
        if crash_file and Path(crash_file).exists():
            raise ValueError("unexpected shape (3, 4)")
        return digest(ctx, "second")

    specs = {"first": StageSpec("first", first), "second": StageSpec("second", second)}
    plan = ["first", "second"]
    if with_upload:
        specs["upload"] = StageSpec("upload", run_upload)
        plan.append("upload")
    return StageRegistry(specs=specs, planner=lambda cfg: list(plan))


def main(argv: list[str]) -> None:
    import argparse

    from faircalib.orchestrator.scheduler import Scheduler, SchedulerOptions
    from faircalib.orchestrator.store import JobStore

    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("counts")
    ap.add_argument("--ready")
    ap.add_argument("--go")
    ap.add_argument("--lease", type=float, default=30.0)
    ap.add_argument("--block")
    args = ap.parse_args(argv)
    store = JobStore(args.db)
    sched = Scheduler(store, registry=make_registry(args.counts, block_file=args.block),
                      options=SchedulerOptions(preflight=False, lease_s=args.lease, heartbeat_s=args.lease / 5,
                                               poll_s=0.1))
    sched.start()
    if args.ready:
        Path(args.ready).write_text(str(os.getpid()))
        while args.go and not Path(args.go).exists():  # start claiming together with the other scheduler
            time.sleep(0.02)
    ran = sched.run(once=True)
    print(json.dumps({"pid": os.getpid(), "ran": ran}))


if __name__ == "__main__":
    main(sys.argv[1:])
