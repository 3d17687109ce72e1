"""Deployment-time modules of a quantized model (what `load_quantized` builds and `quantize` returns).

  QuantLinear       packed integer weights (int4 nibbles for <= 4 bits, int8 otherwise; layout of
                    packing.py) + per-output-channel float32 scales; forward = per-token activation
                    quantization -> integer GEMM -> scale epilogue (+ bias).
  KroneckerOnline   the folded FlatQuant online transform x -> (x ⊙ d)(P1 ⊗ P2), float32.
  QuantEmbedding    per-row quantized embedding table (only with quantize_embed=True).

Every module serialises as `spec()` (JSON: constructor arguments) + its state dict (tensors), and is
rebuilt with `build_module(spec)`; checkpoint/ stores exactly that. QuaRot's `OnlineRotation`
(faircalib.quant.hadamard) is also supported there. The CPU path emulates the integer GEMM exactly:
integer codes held in a float dtype whose mantissa covers the largest possible accumulator
(float32 when K·qmax_a·qmax_w < 2^24, else float64). A CUDA/Triton path plugs into `QuantLinear._gemm`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from faircalib.kernels.packing import container_bits, pack, qrange, unpack
from faircalib.kernels.quantizer import quantize_codes, symmetric_scale
from faircalib.quant.bits import FP_BITS
from faircalib.quant.transforms import kron_apply

INFO_ATTR = "faircalib_quant"  # the attribute holding a quantized model's record (saved by faircalib.checkpoint)

_EPS = 1e-8


def _exact_acc_dtype(k: int, w_bits: int, a_bits: int) -> torch.dtype:
    """float32 holds every integer below 2^24 exactly; a dot product of K codes is bounded by
    K·2^(a-1)·2^(w-1)."""
    bound = k * (2 ** (a_bits - 1)) * (2 ** (w_bits - 1))
    return torch.float32 if bound < 2 ** 24 else torch.float64


_CHUNK_ELEMENTS = 1 << 24  # weight elements per step of row-chunked work (bounds float temporaries)


def _row_chunks(n_rows: int, n_cols: int) -> range:
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    return range(0, n_rows, step)


def quantize_rows(w: torch.Tensor, bits: int, clip: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric quantization of a folded weight (N, K), any float dtype (float64 for folding).

    The scale is rounded to float32 first (what is stored), and codes are taken against that stored
    scale, so dequantization at run time reproduces exactly codes · scale. -> (codes int8, scale f32 (N,)).
    Rows are independent: they are processed in chunks (a (126464, 4096) head never exists in float64).
    """
    N, K = w.shape
    codes = torch.empty(N, K, dtype=torch.int8, device=w.device)
    s = torch.empty(N, dtype=torch.float32, device=w.device)
    step = _row_chunks(N, K).step
    for a in range(0, N, step):
        w64 = w[a:a + step].double()
        c = clip[a:a + step] if isinstance(clip, torch.Tensor) and clip.numel() > 1 else clip
        clip64 = c.double() if isinstance(c, torch.Tensor) else c
        sc = (w64.abs().amax(-1) * (clip64.reshape(-1) if isinstance(clip64, torch.Tensor) else clip64))
        sc = (sc / qrange(bits)[1]).clamp(min=_EPS).float()  # (n,) stored float32
        s[a:a + step] = sc
        codes[a:a + step] = quantize_codes(w64, sc.double()[:, None], bits).to(torch.int8)
    return codes, s


class _KeepDtype(nn.Module):
    """Buffers follow device moves (`.to(device)`, `.cuda()`) but not dtype casts (`.to(bfloat16)`):
    integer codes, scales and transforms keep the precision they were stored in."""

    def _apply(self, fn, recurse=True):
        for name, buf in self._buffers.items():
            if buf is not None:
                probe = fn(torch.empty(0, device=buf.device))
                self._buffers[name] = buf.to(device=probe.device)
        return self


class QuantLinear(_KeepDtype):
    """Integer linear: y = (Q_a(x) codes · W codesᵀ) · s_x · s_w + b.

    Buffers: qweight (N, K/2) uint8 (bits <= 4) or (N, K) int8; w_scale (N,) float32; bias (N,) or
    absent; act_clip () float32 (the learned activation clipping factor, 1 = plain per-token max).
    """

    def __init__(self, in_features: int, out_features: int, w_bits: int, a_bits: int, bias: bool = False):
        super().__init__()
        if container_bits(w_bits) == 4 and in_features % 2:
            raise ValueError(f"int{w_bits} packing needs an even in_features, got {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.w_bits, self.a_bits = w_bits, a_bits
        packed_k = in_features // 2 if container_bits(w_bits) == 4 else in_features
        dt = torch.uint8 if container_bits(w_bits) == 4 else torch.int8
        self.register_buffer("qweight", torch.zeros(out_features, packed_k, dtype=dt))
        self.register_buffer("w_scale", torch.ones(out_features))
        self.register_buffer("act_clip", torch.tensor(1.0))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.acc_dtype = _exact_acc_dtype(in_features, w_bits, a_bits) if a_bits < FP_BITS else torch.float32

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, w_bits: int,
                   a_bits: int, act_clip: float = 1.0) -> QuantLinear:
        """codes: (N, K) integers in the signed w_bits range; scale: (N,)."""
        n, k = codes.shape
        m = cls(k, n, w_bits, a_bits, bias is not None)
        lo, hi = qrange(w_bits)
        if codes.numel() and (int(codes.min()) < lo or int(codes.max()) > hi):
            raise ValueError(f"codes outside the int{w_bits} range [{lo}, {hi}]")
        m.qweight.copy_(pack(codes.to(torch.int8).cpu(), w_bits))
        m.w_scale.copy_(scale.detach().float().reshape(n).cpu())
        m.act_clip.fill_(float(act_clip))
        if bias is not None:
            m.bias.copy_(bias.detach().float().cpu())
        return m.to(codes.device)

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None, w_bits: int, a_bits: int,
                   w_clip: torch.Tensor | float = 1.0, act_clip: float = 1.0) -> QuantLinear:
        """Round-to-nearest per output channel of a (folded) FP weight (N, K) with clipping."""
        codes, scale = quantize_rows(weight.detach(), w_bits, w_clip)
        return cls.from_codes(codes, scale, bias, w_bits, a_bits, act_clip)

    def spec(self) -> dict[str, Any]:
        return {"kind": "quant_linear", "in_features": self.in_features, "out_features": self.out_features,
                "w_bits": self.w_bits, "a_bits": self.a_bits, "bias": self.bias is not None}

    # ------------------------------------------------------------------ math
    def codes(self) -> torch.Tensor:
        """Unpacked weight codes (N, K) int8."""
        return unpack(self.qweight, self.w_bits)

    def dequantized_weight(self) -> torch.Tensor:
        """codes · scale (N, K) float32 — the weight the fake-quant model used."""
        return self.codes().float() * self.w_scale[:, None]

    def _gemm(self, xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
        """Integer GEMM on codes: xq (M, K) · wqᵀ (K, N) -> exact integer accumulators (M, N) as
        `acc_dtype`. The hook for a CUDA/Triton int kernel."""
        return xq.to(self.acc_dtype) @ wq.to(self.acc_dtype).t()

    # --- CUDA path (faircalib.kernels, issue 8) ----------------------------------------------------
    # "auto": Triton W4A4 kernels (fused int4 quantize + int8-dot GEMM) for CUDA inputs when the weights
    # are int4-packed and activations 4-bit; the torch reference below otherwise. "triton" also forces
    # the kernels on CPU under TRITON_INTERPRET=1 (tests); "torch" forces the reference.
    kernel_backend: str = "auto"

    def _use_w4a4_kernels(self, x: torch.Tensor) -> bool:
        return (self.kernel_backend != "torch" and self.a_bits == 4 and container_bits(self.w_bits) == 4
                and (x.is_cuda or self.kernel_backend == "triton"))

    def _forward_w4a4_kernels(self, x: torch.Tensor) -> torch.Tensor:
        from faircalib.kernels import w4a4_linear

        return w4a4_linear(x, self.qweight, self.w_scale, self.bias, clip=self.act_clip, backend="triton")
    # ------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (…, K) -> (…, N) in x's dtype.

        1. per-token quantize: s_x = max|x|·clip / qmax_a (…, 1), xq = clamp(round(x / s_x)) (A16: skip)
        2. integer GEMM of the codes (exact)
        3. epilogue: acc · s_x · s_w + b
        """
        if self._use_w4a4_kernels(x):  # CUDA: the same math in Triton kernels
            return self._forward_w4a4_kernels(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        # output channels in chunks: the unpacked / dequantized weight of a (126464, 4096) head would be a
        # 2 GB float32 temporary per call; per-channel results are independent, so chunking is exact
        rows = _row_chunks(self.out_features, self.in_features)
        if self.a_bits >= FP_BITS:  # weight-only: dequantize and use a float GEMM
            # float32 on CPU (the exact emulation); a bf16/fp16 GEMM on CUDA (tensor cores: the int8 head
            # of an 8B model is 4 TFLOP per decoding step at 4096 tokens)
            cdt = x.dtype if x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) else torch.float32
            xf = x2.to(cdt)
            parts = [F.linear(xf, (unpack(self.qweight[a:a + rows.step], self.w_bits).float()
                                   * self.w_scale[a:a + rows.step, None]).to(cdt)) for a in rows]
            y = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)).float()  # (M, N)
        else:
            xf = x2.float()  # (M, K) one float32 copy for the scale and the codes
            s_x = symmetric_scale(xf, self.a_bits, self.act_clip)  # (M, 1)
            xq = quantize_codes(xf, s_x, self.a_bits)  # (M, K) integer-valued
            del xf
            parts = [self._gemm(xq, unpack(self.qweight[a:a + rows.step], self.w_bits)) for a in rows]
            acc = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (M, N)
            # epilogue acc · s_x · s_w, in place on the fresh accumulator where it is float32 (same
            # values as out-of-place; saves two (M, N) temporaries per call)
            if acc.dtype == torch.float32 and not acc.requires_grad:
                y = acc.mul_(s_x).mul_(self.w_scale)
            else:
                y = (acc * s_x.to(self.acc_dtype)).float() * self.w_scale
        if self.bias is not None:
            y = y.add_(self.bias) if not y.requires_grad else y + self.bias
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, w_bits={self.w_bits}, "
                f"a_bits={self.a_bits}, bias={self.bias is not None}")


class KroneckerOnline(_KeepDtype):
    """Deployed FlatQuant transform x -> (x ⊙ d)(P1 ⊗ P2) (same op order as KroneckerTransform)."""

    def __init__(self, n1: int, n2: int):
        super().__init__()
        self.n1, self.n2 = n1, n2
        self.register_buffer("diag", torch.ones(n1 * n2))
        self.register_buffer("p1", torch.eye(n1))
        self.register_buffer("p2", torch.eye(n2))

    @classmethod
    def from_tensors(cls, diag: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> KroneckerOnline:
        m = cls(p1.shape[0], p2.shape[0])
        m.diag.copy_(diag.detach().float().cpu())
        m.p1.copy_(p1.detach().float().cpu())
        m.p2.copy_(p2.detach().float().cpu())
        return m.to(p1.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, K) -> (…, K), float32 math, x's dtype out."""
        return kron_apply(x.float() * self.diag, self.p1, self.p2).to(x.dtype)

    def spec(self) -> dict[str, Any]:
        return {"kind": "kronecker", "n1": self.n1, "n2": self.n2}


class QuantEmbedding(_KeepDtype):
    """Embedding table stored as per-row int codes + float32 scales; lookup dequantizes the rows."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int):
        super().__init__()
        if container_bits(bits) == 4 and embedding_dim % 2:
            raise ValueError(f"int{bits} packing needs an even embedding_dim, got {embedding_dim}")
        self.num_embeddings, self.embedding_dim, self.bits = num_embeddings, embedding_dim, bits
        packed = embedding_dim // 2 if container_bits(bits) == 4 else embedding_dim
        dt = torch.uint8 if container_bits(bits) == 4 else torch.int8
        self.register_buffer("qweight", torch.zeros(num_embeddings, packed, dtype=dt))
        self.register_buffer("w_scale", torch.ones(num_embeddings))

    @classmethod
    def from_float(cls, weight: torch.Tensor, bits: int) -> QuantEmbedding:
        codes, scale = quantize_rows(weight.detach(), bits)
        m = cls(weight.shape[0], weight.shape[1], bits)
        m.qweight.copy_(pack(codes.cpu(), bits))
        m.w_scale.copy_(scale.cpu())
        return m.to(weight.device)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (V, D) (for code that inspects `embed_tokens.weight`'s device/dtype)."""
        return unpack(self.qweight, self.bits).float() * self.w_scale[:, None]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, D)."""
        rows = unpack(self.qweight[ids], self.bits).float()  # (B, T, D)
        return rows * self.w_scale[ids][..., None]

    def spec(self) -> dict[str, Any]:
        return {"kind": "quant_embedding", "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim, "bits": self.bits}


# ---------------------------------------------------------------------- (de)serialisation of modules
def module_spec(module: nn.Module) -> dict[str, Any]:
    """JSON description from which `build_module` rebuilds an empty module of the same shape."""
    if hasattr(module, "spec") and callable(module.spec):
        return module.spec()
    from faircalib.quant.hadamard import OnlineRotation

    if isinstance(module, OnlineRotation):
        layout = []
        for item in module._layout:
            layout.append(item if isinstance(item, int) else {"buffer": item,
                                                               "size": int(getattr(module, item).shape[0])})
        return {"kind": "online_rotation", "rotation": module.kind, "layout": layout,
                "signs": module.signs is not None, "n": module.n}
    if isinstance(module, nn.Linear):
        return {"kind": "linear", "in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}
    raise TypeError(f"cannot serialise a {type(module).__name__} into a quantized checkpoint")


def build_module(spec: dict[str, Any]) -> nn.Module:
    """Inverse of `module_spec` (tensors are filled afterwards from the checkpoint's state dict)."""
    kind = spec.get("kind")
    if kind == "quant_linear":
        return QuantLinear(spec["in_features"], spec["out_features"], spec["w_bits"], spec["a_bits"], spec["bias"])
    if kind == "kronecker":
        return KroneckerOnline(spec["n1"], spec["n2"])
    if kind == "quant_embedding":
        return QuantEmbedding(spec["num_embeddings"], spec["embedding_dim"], spec["bits"])
    if kind == "linear":
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
    if kind == "online_rotation":
        from faircalib.quant.hadamard import OnlineRotation, StructuredOrthogonal

        factors = tuple(item if isinstance(item, int) else torch.zeros(item["size"], item["size"],
                                                                          dtype=torch.float64)
                        for item in spec["layout"])
        n = math.prod(item if isinstance(item, int) else item["size"] for item in spec["layout"])
        signs = torch.ones(n, dtype=torch.float64) if spec["signs"] else None
        m = OnlineRotation(StructuredOrthogonal(factors, signs, spec["rotation"]))
        return m
    raise ValueError(f"unknown module kind {kind!r} in quantized checkpoint")
