"""What every actor does first: set its torch threads and pick its device (CUDA when Ray gave it a GPU)."""
from __future__ import annotations


def prepare_actor(threads: int) -> str:
    """torch threads = `threads` (>= 1), denormals flushed; returns "cuda" or "cpu"."""
    import ray
    import torch

    torch.set_num_threads(max(1, int(threads)))
    torch.set_flush_denormal(True)
    return "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
