"""faircalib.progress: the event catalogue's bar readings, the one-line form with elapsed time and ETA,
throttling of frequent events; and the library's long loops really emit the events (Stage I, Stage II)."""
from __future__ import annotations

import io

import torch

from faircalib.progress import LinePrinter, combine, event_line, human_bytes, measure


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_measures_of_the_main_events():
    m = measure({"event": "probe_batch", "done": 32, "total": 128, "batch": 1})
    assert (m.key, m.done, m.total, m.unit, m.finished) == ("probe", 32, 128, "prompts", False)
    m = measure({"event": "epoch", "block": 2, "n_blocks": 4, "epoch": 15, "epochs": 15, "loss": 1.5e-3})
    assert (m.key, m.label, m.done, m.total, m.info, m.finished) == ("epochs", "block 3/4", 15, 15, "loss 0.0015", True)
    m = measure({"event": "block_done", "block": 3, "n_blocks": 4, "init_loss": 0.02, "final_loss": 0.01})
    assert (m.key, m.done, m.total, m.finished) == ("blocks", 4, 4, True)
    assert measure({"event": "done", "wall_time_s": 3.0}).remove == ("epochs",)
    m = measure({"event": "transfer", "direction": "upload", "key": "a", "done": 10, "total": 10})
    assert (m.key, m.unit, m.finished) == ("upload", "bytes", True)
    m = measure({"event": "train_step", "step": 5, "total": None, "elapsed_s": 12.0, "budget_s": 60.0, "loss": 2.0})
    assert (m.done, m.total, m.unit, m.info) == (12.0, 60.0, "s", "step 5 loss 2")
    assert measure({"event": "fallback", "block": 0, "reason": "nan"}) is None
    assert event_line({"event": "fallback", "block": 0, "reason": "nan"}) == "block 1: fallback (nan)"
    assert human_bytes(2_500_000) == "2.5 MB" and human_bytes(512) == "512 B"


def test_line_printer_elapsed_eta_and_new_loops():
    clock, out = Clock(), io.StringIO()
    p = LinePrinter(out, clock=clock)
    p({"event": "probe_start", "n_samples": 64})
    for done in (16, 32, 64):
        clock.t += 4
        p({"event": "probe_batch", "done": done, "total": 64, "batch": 0})
    for block in range(2):
        p({"event": "block_start", "block": block, "n_blocks": 2, "epochs": 2})
        for epoch in (1, 2):
            clock.t += 1
            p({"event": "epoch", "block": block, "n_blocks": 2, "epoch": epoch, "epochs": 2, "loss": 0.5 / epoch})
    lines = out.getvalue().splitlines()
    assert lines[0] == "Stage I probe: 64 prompts"
    assert lines[1] == "Stage I probe: 16/64 prompts [4.0s, eta 12s]"      # 16 prompts per 4 s, 48 left
    assert lines[2] == "Stage I probe: 32/64 prompts [8.0s, eta 8.0s]"
    assert lines[3] == "Stage I probe: 64/64 prompts [12s]"                  # finished: no ETA
    assert lines[4] == "block 1/2: calibrating (2 epochs)"
    assert lines[5] == "block 1/2 epoch 1/2: loss 0.5 [1.0s, eta 1.0s]"
    assert lines[8] == "block 2/2 epoch 1/2: loss 0.5 [1.0s, eta 1.0s]"   # the epochs bar restarts per block


def test_frequent_events_are_throttled_but_the_last_always_prints():
    clock, out = Clock(), io.StringIO()
    p = LinePrinter(out, clock=clock, every={"eval_requests": 5.0})
    for done in range(1, 11):
        clock.t += 1
        p({"event": "eval_requests", "task": "arith", "kind": "generate_until", "done": done, "total": 10})
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[1].split()[0] for ln in lines] == ["1/10", "6/10", "10/10"]
    seen: list = []
    combine(None, seen.append, seen.append)({"event": "x"})
    assert seen == [{"event": "x"}, {"event": "x"}]


def test_stage_one_and_two_emit_their_events(byte_tokenizer):
    from faircalib.calibrate import CalibConfig, quantize
    from faircalib.models import tiny_model
    from faircalib.probe import ProbeConfig, probe_prior
    from faircalib.quant import QuantConfig

    tok = byte_tokenizer
    m = tiny_model("llada", vocab_size=len(tok), mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id)
    events: list[dict] = []
    probe_prior(m, tok, ["1+2=", "3+4=", "5+6="], ProbeConfig(n_samples=3, steps=4, window=4, batch_size=2),
                progress=events.append)
    assert [(e["done"], e["total"]) for e in events] == [(2, 3), (3, 3)]
    events.clear()
    ids = torch.randint(3, len(tok), (4, 12), generator=torch.Generator().manual_seed(0))
    quantize(m, QuantConfig.from_bits("w4a4", method="flatquant"), ids, calib_cfg=CalibConfig(epochs=2),
             progress=events.append)
    kinds = [e["event"] for e in events]
    n = len(m.blocks)
    assert kinds == ["start"] + ["block_start", "epoch", "epoch", "block_done"] * n + ["done"]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert all(e["n_blocks"] == n and e["epochs"] == 2 and e["loss"] > 0 for e in epochs)
    assert events[1]["epochs"] == 2 and [e["epoch"] for e in epochs] == [1, 2] * n
