"""Shared test setup: offline, deterministic, small."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # Triton kernels (tests/kernels) run in the interpreter on CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_flush_denormal(True)


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test (tiny models on a shared machine run many times faster
    without thread spinning), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def byte_tokenizer():
    """A tiny byte-level BPE trained on the fly (no download), with eos/pad/mask specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["In the beginning God created the heaven and the earth. 12+34=46"] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>",
                                   mask_token="<mask>")


@pytest.fixture(scope="session")
def _ray_session_owner():
    from faircalib.orchestrator.testing import stop_test_ray

    yield
    stop_test_ray()


@pytest.fixture
def ray_session(_ray_session_owner):
    """One local Ray for the whole test session (orchestrator and worker tests share it), with the session's
    S3 settings in its workers' environment; re-made if an earlier test shut it down or replaced it."""
    from faircalib.orchestrator.testing import start_test_ray

    start_test_ray(num_cpus=2)
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, byte_tokenizer):
    """A tiny random LLaDA in the official layout with a byte-level tokenizer (real files, loadable)."""
    from faircalib.models import save_model_dir, tiny_model

    path = tmp_path_factory.mktemp("models") / "tiny-llada"
    tok = byte_tokenizer
    model = tiny_model("llada", seed=0, vocab_size=len(tok), mask_token_id=tok.mask_token_id,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    save_model_dir(model, path, tokenizer=tok)
    return path


# the benchmark scripts are files, not a package: `load_bench("scale")` imports benchmarks/scale.py
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # a benchmark may import its siblings (fidelity -> fidelity_report)
    spec = importlib.util.spec_from_file_location(f"faircalib_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def load_bench():
    return _load
