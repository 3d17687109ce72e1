"""Text / prompt sources and deterministic sampling."""
from __future__ import annotations

import json

import pytest
import torch

from faircalib.data import iter_documents, kjv_chapters, sample_prompts, sample_token_sequences
from faircalib.errors import DataError


def test_builtin_kjv_is_offline_and_complete():
    chapters = kjv_chapters()
    assert len(chapters) == 1189  # chapters in the KJV
    assert chapters[0].startswith("In the beginning God created the heaven and the earth.")


def test_kjv_splits_partition_the_chapters():
    from faircalib.data import kjv_split

    parts = {s: kjv_split(s) for s in ("train", "probe", "heldout")}
    assert sum(map(len, parts.values())) == 1189
    assert not set(parts["train"]) & set(parts["heldout"])
    assert 90 < len(parts["heldout"]) < 150
    assert list(iter_documents("builtin:kjv:heldout")) == parts["heldout"]


def test_mix_interleaves_text_and_tasks():
    from faircalib.data import kjv_split

    docs = list(iter_documents("builtin:mix", task_examples=2000))
    assert docs[0] == kjv_split("train")[0]
    assert docs[1].startswith("Q: ") and "\nA: " in docs[1]


def test_local_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\nsecond doc\n")
    assert list(iter_documents(str(tmp_path / "a.txt"))) == ["first doc\nline two", "second doc"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x y"}) + "\n" + json.dumps({"text": "z"}) + "\n")
    assert list(iter_documents(str(tmp_path / "b.jsonl"))) == ["x y", "z"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="need one of the fields text"):
        list(iter_documents(str(tmp_path / "c.jsonl")))


def test_unknown_source_and_offline_dataset():
    with pytest.raises(DataError, match="is not a file and not one of builtin:kjv"):
        list(iter_documents("no/such/file.txt"))
    with pytest.raises(DataError, match=r"'hf:wikitext:wikitext-2-raw-v1:train' cannot be loaded \(you are offline\)"):
        list(iter_documents("hf:wikitext:wikitext-2-raw-v1:train"))
    with pytest.raises(DataError, match="expected hf:REPO"):
        list(iter_documents("hf:a:b:c:d"))


def test_calibration_sequences_deterministic(byte_tokenizer):
    a = sample_token_sequences(byte_tokenizer, "builtin:kjv", n=4, seq_len=32, seed=0)
    b = sample_token_sequences(byte_tokenizer, "builtin:kjv", n=4, seq_len=32, seed=0)
    c = sample_token_sequences(byte_tokenizer, "builtin:kjv", n=4, seq_len=32, seed=1)
    assert a.shape == (4, 32) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    text = byte_tokenizer.decode(a[0])
    assert len(text) > 32  # real text, several characters per token


def test_prompts_from_tasks_use_probe_split(tmp_path):
    ps = sample_prompts("builtin:tasks", n=20, seed=0)
    assert len(ps) == 20 and all(p.startswith("Q: ") and p.endswith("\nA:") for p in ps)
    assert ps == sample_prompts("builtin:tasks", n=20, seed=0)
    from faircalib.data import sample_tasks

    held = {e.prompt for e in sample_tasks(2000, "heldout", seed=0)}
    assert not held & set(sample_prompts("builtin:tasks", n=500, seed=0))
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps({"question": f"q{i}"}) for i in range(5)))
    assert sorted(sample_prompts(str(f), n=5)) == [f"q{i}" for i in range(5)]
    with pytest.raises(DataError, match="has 5 prompts but 6 were requested"):
        sample_prompts(str(f), n=6)
