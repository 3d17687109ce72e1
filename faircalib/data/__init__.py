"""Offline-first data: procedural tasks with exact answers, text corpora, deterministic sampling."""
from faircalib.data.corpus import BUILTIN_TEXT, iter_documents, iter_prompts, kjv_chapters, kjv_split
from faircalib.data.sampling import (answer_window_ids, sample_prompts, sample_task_sequences, sample_token_sequences,
                                     tokenize_stream)
from faircalib.data.long_tasks import HARD_LONG_FAMILIES, LONG_FAMILIES, LONG_WINDOW
from faircalib.data.tasks import ALL_FAMILIES, FAMILIES, FAMILY_SETS, SPLITS, families_of, TaskExample, exact_match, format_prompt, sample_tasks, split_of

__all__ = ["ALL_FAMILIES", "BUILTIN_TEXT", "FAMILIES", "FAMILY_SETS", "HARD_LONG_FAMILIES", "LONG_FAMILIES", "LONG_WINDOW", "answer_window_ids", "families_of", "sample_task_sequences", "SPLITS", "TaskExample", "exact_match", "format_prompt", "iter_documents",
           "iter_prompts", "kjv_chapters", "kjv_split", "sample_prompts", "sample_tasks",
           "sample_token_sequences", "split_of", "tokenize_stream"]
