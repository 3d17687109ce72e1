"""Fixtures for the Ray worker tests: one shared local Ray session and a tiny model directory."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    from faircalib.orchestrator.testing import start_test_ray, stop_test_ray

    start_test_ray(num_cpus=2)
    yield
    import ray

    ray.shutdown()
    stop_test_ray()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, byte_tokenizer):
    from faircalib.models import save_model_dir, tiny_model

    path = tmp_path_factory.mktemp("models") / "tiny-llada"
    tok = byte_tokenizer
    model = tiny_model("llada", seed=0, vocab_size=len(tok), mask_token_id=tok.mask_token_id,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    save_model_dir(model, path, tokenizer=tok)
    return path
