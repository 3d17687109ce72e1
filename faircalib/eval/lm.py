"""lm-eval-harness model class for faircalib's dLLMs (FP or quantized): `--model faircalib`.

    lm_eval ... --model faircalib --model_args pretrained=zoo:tiny-llada,mc_num=128,gen_length=16
    FaircalibLM(model=m, tokenizer=tok, mc_num=32)          # in memory (the job service's eval actors)

pretrained: a model directory, `zoo:NAME` or a quantized checkpoint directory (anything
`faircalib.eval.loading.load_for_eval` loads). Request types:

  loglikelihood          -T from faircalib.eval.loglik (Monte Carlo masked estimate with `mc_num` draws of
                         stratified mask counts over the continuation, context unmasked, CE / mask ratio;
                         exact enumeration when 2^L - 1 <= mc_num and exact_when_cheap). is_greedy: greedy
                         diffusion decoding of len(continuation) tokens (default policy, one token per
                         step) reproduces the continuation (skipped, False, with check_greedy=False).
                         An empty context is replaced by one prefix token (BOS, else EOS).
  loglikelihood_rolling  sum of the same estimate over `loglik.rolling_pairs` windows of the document
                         (a one-token prefix, then windows of max_length tokens with `rolling_context`
                         tokens of context); an upper bound on the document's NLL, so perplexities
                         derived from it are upper bounds too.
  generate_until         diffusion decoding (DecodeConfig: the model's default policy unless `policy`;
                         gen_length / steps / block_length from model_args, else the model card, else
                         the family's documented defaults), per-request overrides from gen_kwargs keys
                         gen_length, steps, block_length, policy, temperature (do_sample=false: greedy);
                         `max_gen_toks` is ignored (the window length is gen_length). The text is cut at
                         the first EOS, then at the first occurrence of any `until` string.

Module boundary: adapts lm-eval requests to faircalib.eval.loglik and faircalib.diffusion; loading is
faircalib.eval.loading, the settings faircalib.eval.settings, running and result shaping
faircalib.eval.harness.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from faircalib.diffusion import DecodeConfig, decode_text, generate, resolve_config
from faircalib.diffusion.config import DECODE_FIELDS
from faircalib.errors import ConfigError
from faircalib.eval.loading import load_for_eval
from faircalib.eval.loglik import greedy_matches, masked_nll, rolling_pairs, rows_needed
from faircalib.eval.settings import LMEvalSettings
from faircalib.models.defaults import model_decoding

log = logging.getLogger(__name__)


class _SuiteNoiseFilter(logging.Filter):
    """lm-eval warns on every task with a `custom_dataset` that custom kwargs could be passed; for the
    shipped suite (which takes none) that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("faircalib_") and "Custom kwargs can be passed" in msg)


logging.getLogger("lm_eval.api.task").addFilter(_SuiteNoiseFilter())
def _as_int(name: str, v: Any) -> Any:
    if v is None or isinstance(v, int):
        return v
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ConfigError(f"lm-eval {name}={v!r}: must be an integer") from None


@register_model("faircalib")
class FaircalibLM(LM):
    """lm-eval LM over a faircalib DiffusionLM (see the module docstring for each request type)."""

    def __init__(self, pretrained: str | None = None, *, model: Any = None, tokenizer: Any = None,
                 settings: LMEvalSettings | None = None, mc_num: int | None = None, batch_size: Any = None,
                 gen_batch_size: int | None = None, seed: int | None = None, check_greedy: bool | None = None,
                 exact_when_cheap: bool | None = None, max_length: int | None = None,
                 rolling_context: int | None = None, gen_length: int | None = None, steps: int | None = None,
                 block_length: int | None = None, policy: str | None = None, temperature: float | None = None,
                 device: str | None = None, dtype: str | None = None, max_batch_size: Any = None,
                 **unused: Any) -> None:
        super().__init__()
        if unused:
            raise ConfigError(f"faircalib lm-eval model: unknown model_args {sorted(unused)}; see "
                              f"faircalib.eval.lm.FaircalibLM for the accepted ones")
        self.source = None
        card_decoding: dict = {}
        if model is None:
            if pretrained is None:
                raise ConfigError("faircalib lm-eval model needs pretrained=SOURCE (a model directory, zoo:NAME or "
                                  "a quantized checkpoint directory) or an in-memory model=")
            loaded = load_for_eval(str(pretrained), device=device or "auto", dtype=dtype)
            model, tokenizer = loaded.model, tokenizer or loaded.tokenizer
            self.source = str(pretrained)
            card_decoding = model_decoding(str(pretrained), loaded.path).values
        elif pretrained is not None:
            raise ConfigError("give either pretrained=SOURCE or model=, not both")
        if tokenizer is None:
            raise ConfigError("faircalib lm-eval model needs a tokenizer (the model directory ships none); pass "
                              "tokenizer=")
        base = (settings or LMEvalSettings()).lm_settings()
        over: dict[str, Any] = {}
        if isinstance(batch_size, str) and batch_size.startswith("auto"):
            batch_size = None  # no automatic batch-size search: rows are tiny, use the default
        for name, v in (("mc_num", mc_num), ("batch_size", batch_size), ("gen_batch_size", gen_batch_size),
                        ("seed", seed), ("max_length", max_length), ("rolling_context", rolling_context)):
            if v is not None:
                over[name] = _as_int(name, v)
        for name, v in (("check_greedy", check_greedy), ("exact_when_cheap", exact_when_cheap)):
            if v is not None:
                over[name] = v
        decoding = {**card_decoding, **base.decoding}
        for name, v in (("gen_length", gen_length), ("steps", steps), ("block_length", block_length)):
            if v is not None:
                decoding[name] = _as_int(name, v)
        if policy is not None:
            decoding["policy"] = policy
        if temperature is not None:
            decoding["temperature"] = float(temperature)
        decoding = {k: v for k, v in decoding.items() if k in DECODE_FIELDS}
        self.settings = base.replace(**over, decoding=decoding)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.progress = True  # tqdm bars (run_lm_eval(progress=False) turns them off)
        self.report: Any = None  # optional callback: eval_requests progress events (run_lm_eval sets it)
        self.current_task: str | None = None
        self.model_seconds = 0.0  # wall time spent answering requests (all request types)
        cfg = model.config
        self.max_length = self.settings.max_length or int(getattr(cfg, "max_seq_len", 0) or 2048)
        self.rolling_context = (self.settings.rolling_context if self.settings.rolling_context is not None
                                else self.max_length // 2)
        if self.rolling_context >= self.max_length - 1:
            raise ConfigError(f"rolling_context={self.rolling_context} must be < max_length - 1 = {self.max_length - 1}")
        self.decode_config = DecodeConfig.from_dict(dict(self.settings.decoding))
        bos = getattr(tokenizer, "bos_token_id", None)
        eos = getattr(tokenizer, "eos_token_id", None)
        self.prefix_token_id = int(bos if bos is not None else (eos if eos is not None else cfg.eos_token_id))
        for p in model.parameters():
            self._device = p.device
            break

    # -- helpers ----------------------------------------------------------------------------------
    def tok_encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context / continuation ids as lm-eval's HF model does: trailing context spaces move to the
        continuation, the pair is tokenized whole and the continuation is what follows the context's
        tokens. The context is cut from the left to fit max_length (an empty one becomes the prefix
        token); an over-long continuation keeps its last max_length - 1 tokens."""
        n = len(context) - len(context.rstrip())
        if n:
            continuation, context = context[-n:] + continuation, context[:-n]
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context) if context else []
        cont = whole[len(ctx):]
        if not cont:  # tokenizer merged the continuation into the context's last token
            ctx, cont = self.tok_encode(context), self.tok_encode(continuation)
        if len(cont) > self.max_length - 1:
            cont = cont[-(self.max_length - 1):]
        ctx = ctx[-(self.max_length - len(cont)):] if ctx else []
        return (ctx or [self.prefix_token_id]), cont

    def _bar(self, total: int, desc: str, disable: bool, unit: str = "row"):
        bar = tqdm(total=total, desc=desc, disable=disable or not self.progress or total == 0, unit=unit)
        return _ReportingBar(bar, self.report, desc.removeprefix("faircalib "), total)

    def get_model_info(self) -> dict:
        info = {"faircalib_source": self.source, "faircalib_settings": self.settings.to_dict(),
                "faircalib_decoding": resolve_config(self.model, self.decode_config).to_dict()}
        q = getattr(self.model, "faircalib_quant", None)
        if q is not None:
            qc = q.get("quant_config", {})
            info["faircalib_quant"] = {k: qc.get(k) for k in ("method", "w_bits", "a_bits")}
        return info

    # -- request types ----------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        with self._timed():
            return self._loglikelihood(requests, disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        with self._timed():
            return self._loglikelihood_rolling(requests, disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        with self._timed():
            return self._generate_until(requests, disable_tqdm)

    @contextmanager
    def _timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.model_seconds += time.perf_counter() - t0

    def _loglikelihood(self, requests, disable_tqdm: bool) -> list[tuple[float, bool]]:
        pairs = [self.encode_pair(*req.args[:2]) for req in requests]
        s = self.settings
        with self._bar(rows_needed(pairs, s.mc_num, s.exact_when_cheap), "faircalib loglikelihood",
                       disable_tqdm) as bar:
            nll = masked_nll(self.model, pairs, mc_num=s.mc_num, batch_size=s.batch_size, seed=s.seed,
                             exact_when_cheap=s.exact_when_cheap, progress=bar.update)
        greedy = (greedy_matches(self.model, pairs, s.gen_batch_size, self.decode_config.policy)
                  if s.check_greedy else [False] * len(pairs))
        out = []
        for req, v, g in zip(requests, nll, greedy):
            res = (-float(v), bool(g))
            self.cache_hook.add_partial("loglikelihood", req.args[:2], res)
            out.append(res)
        return out

    def _loglikelihood_rolling(self, requests, disable_tqdm: bool) -> list[float]:
        s = self.settings
        pairs, owner = [], []
        for k, req in enumerate(requests):
            for p in rolling_pairs(self.tok_encode(req.args[0]), self.prefix_token_id, self.max_length,
                                   self.rolling_context):
                pairs.append(p)
                owner.append(k)
        with self._bar(rows_needed(pairs, s.mc_num, s.exact_when_cheap), "faircalib loglikelihood_rolling",
                       disable_tqdm) as bar:
            nll = masked_nll(self.model, pairs, mc_num=s.mc_num, batch_size=s.batch_size, seed=s.seed,
                             exact_when_cheap=s.exact_when_cheap, progress=bar.update) if pairs else []
        totals = [0.0] * len(requests)
        for k, v in zip(owner, nll):
            totals[k] -= v
        for req, t in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args[:1], t)
        return totals

    def _request_config(self, gen_kwargs: dict) -> tuple[DecodeConfig, list[str]]:
        kw = dict(gen_kwargs or {})
        until = kw.pop("until", None) or []
        if isinstance(until, str):
            until = [until]
        do_sample = kw.pop("do_sample", None)
        # a task's top_k / top_p are autoregressive sampling knobs: the model's decoding settings decide those
        over = {k: kw.pop(k) for k in list(kw) if k in DECODE_FIELDS and k not in ("top_k", "top_p")}
        for k in ("gen_length", "steps", "block_length"):
            if k in over:
                over[k] = _as_int(k, over[k])
        if do_sample is False:
            over["temperature"] = 0.0
        cfg = DecodeConfig.from_dict({**self.decode_config.to_dict(), **over})
        ignored = sorted(set(kw) - {"max_gen_toks"})
        if ignored:
            log.debug("faircalib generate_until ignores gen_kwargs %s", ignored)
        return cfg, [u for u in until if u]

    def _generate_until(self, requests, disable_tqdm: bool) -> list[str]:
        s = self.settings
        groups: dict[tuple, list[int]] = {}
        configs: dict[tuple, DecodeConfig] = {}
        untils: list[list[str]] = []
        prompts: list[list[int]] = []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args[0], req.args[1]
            cfg, until = self._request_config(gen_kwargs)
            key = tuple(sorted(cfg.to_dict().items()))
            configs[key] = cfg
            groups.setdefault(key, []).append(i)
            untils.append(until)
            keep = self.max_length - cfg.gen_length
            if keep < 1:
                raise ConfigError(f"gen_length={cfg.gen_length} leaves no room for a prompt in max_length="
                                  f"{self.max_length}")
            ids = self.tok_encode(context)[-keep:]
            prompts.append(ids or [self.prefix_token_id])
        out: list[str | None] = [None] * len(requests)
        bar = self._bar(len(requests), "faircalib generate_until", disable_tqdm, unit="req")
        batch_no = 0
        for key, idx in groups.items():
            cfg = configs[key]
            idx = sorted(idx, key=lambda i: -len(prompts[i]))
            for b in range(0, len(idx), s.gen_batch_size):
                chunk = idx[b:b + s.gen_batch_size]
                traj = generate(self.model, [torch.tensor(prompts[i], dtype=torch.long) for i in chunk],
                                config=cfg, seed=cfg.seed + s.seed + batch_no)
                batch_no += 1
                for i, text in zip(chunk, decode_text(self.tokenizer, traj)):
                    out[i] = cut_at_stop(text, untils[i])
                    self.cache_hook.add_partial("generate_until", requests[i].args[:2], out[i])
                bar.update(len(chunk))
        bar.close()
        return [o if o is not None else "" for o in out]


class _ReportingBar:
    """A tqdm bar that also sends {"event": "eval_requests", kind, done, total} to a progress callback
    (at most ~50 times per bar, and always at the end)."""

    def __init__(self, bar, report, kind: str, total: int):
        self.bar, self.report, self.kind, self.total = bar, report, kind, total
        self.done, self._sent, self._step = 0, 0, max(1, total // 50)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.done += n
        if self.report is not None and (self.done - self._sent >= self._step or self.done >= self.total):
            self._sent = self.done
            self.report({"event": "eval_requests", "kind": self.kind, "done": self.done, "total": self.total,
                         "message": f"{self.kind} {self.done}/{self.total} rows"})

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cut_at_stop(text: str, until: list[str]) -> str:
    """Truncate at the earliest occurrence of any stop string."""
    cut = len(text)
    for u in until:
        j = text.find(u)
        if j != -1:
            cut = min(cut, j)
    return text[:cut]
