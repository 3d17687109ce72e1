"""benchmarks/service.py: the host-ceiling measurement (the same probe ranges in plain processes, no Ray)
splits the work across the processes and reports walls and a speed-up from them."""
from __future__ import annotations


def test_host_ceiling_times_one_and_two_plain_processes(tiny_model_dir, capsys, load_bench):
    service = load_bench("service")
    out = service.host_ceiling(str(tiny_model_dir), n=32, order=(1, 2))
    capsys.readouterr()
    walls = out["wall_s"]
    assert set(walls) == {"1", "2"} and len(walls["1"]) == len(walls["2"]) == 1
    assert min(walls["1"] + walls["2"]) > 0
    assert out["speedup_2_vs_1"] == round(walls["1"][0] / walls["2"][0], 3)
