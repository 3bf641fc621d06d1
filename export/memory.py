"""How much memory an export needs, and whether this machine has it: refuse before the work, in one sentence.

An export holds, at its peak, the PyTorch model, its traced ONNX graph (and the simplifier's copy), an ONNX
Runtime session and the float32 tensors of one forward pass in each of PyTorch and ONNX Runtime (the parity
check runs both). The estimate is that sum as a formula of the model and the input size:

    peak = BASE + PARAM_COPIES * 4 * params
                + ACTIVATION_COPIES * pixels * bytes_per_pixel(variant)
                + ATTENTION_COPIES * attention_bytes(model, H, W)

``bytes_per_pixel``: float32 bytes per input pixel of the widest encoder stage (its MLP hidden layer), the
decoder's four concatenated maps at 1/4 resolution and the full-resolution logits (linear in the pixels).
``attention_bytes``: the decoder's N x M attention logits, summed over its cross-attention modules and heads
(queries and keys both grow with the image: quadratic in the pixels, what makes large sizes explode). N, M and
the heads are read off the model by one forward pass at a small probe size. The constants are fitted to peaks
measured with ``python benchmarks/bench_export_memory_estimate.py`` (table in docs/export.md).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from scaseg.errors import ScasegError
from scaseg.memory import MEMORY_MARGIN, GiB
from scaseg.memory import available_memory as available_bytes  # the one home of the memory rule

BASE = 0.42 * GiB  # Python with torch, onnx, onnxsim and onnxruntime imported (measured: 0.55 GiB at 128x128)
PARAM_COPIES = 6.0  # the model, the ONNX proto, its serialised bytes, the simplifier's copy, the session's
ACTIVATION_COPIES = 2.5  # fitted (docs/export.md)
ATTENTION_COPIES = 1.0  # fitted (docs/export.md)
MARGIN = MEMORY_MARGIN  # refuse above available / MARGIN: the estimate is a fit, not a bound
PROBE = (64, 64)


def bytes_per_pixel(spec: Mapping[str, Any], num_classes: int) -> float:
    """float32 bytes per input pixel held by the widest step of one forward pass of this variant."""
    dims = spec["embed_dims"]
    ratios = spec.get("mlp_ratios", (4, 4, 4, 4))
    stage = max(d * r / (4 * 2**i) ** 2 for i, (d, r) in enumerate(zip(dims, ratios)))
    decoder = 4 * spec["decoder_dim"] / 16  # four maps of decoder_dim channels at 1/4 resolution, concatenated
    return 4.0 * (stage + decoder + num_classes)


def attention_elements(model: Any, probe: Sequence[int] = PROBE) -> int:
    """Sum of heads x N x M over the model's attention cores, for one image at ``probe`` (H, W)."""
    import torch

    from scaseg.models.decoder import StripAttentionCore

    seen: list[int] = []

    def record(_module: Any, inputs: tuple, _output: Any) -> None:
        q, k = inputs[0], inputs[1]  # (B, heads, N, dq), (B, heads, M, dq)
        seen.append(int(q.shape[1]) * int(q.shape[2]) * int(k.shape[2]))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, StripAttentionCore)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *probe))
    finally:
        for h in hooks:
            h.remove()
    return sum(seen)


def estimate_export_bytes(spec: Mapping[str, Any], num_classes: int, params: int, imgsz: Sequence[int], batch: int,
                          attention_at_probe: int = 0, probe: Sequence[int] = PROBE) -> int:
    """Estimated peak resident memory (bytes) of scaseg-export at ``imgsz`` (H, W) and ``batch``.

    ``attention_at_probe``: attention_elements(model, probe); queries and keys both scale with the pixels.
    """
    h, w = (int(v) for v in imgsz)
    b = max(1, int(batch))
    scale = (h * w) / (probe[0] * probe[1])
    attention = 4.0 * attention_at_probe * scale * scale * b
    return int(BASE + PARAM_COPIES * 4 * params + ACTIVATION_COPIES * h * w * b * bytes_per_pixel(spec, num_classes)
               + ATTENTION_COPIES * attention)


def estimate_for_model(model: Any, spec: Mapping[str, Any], num_classes: int, imgsz: Sequence[int], batch: int) -> int:
    """estimate_export_bytes with the parameters and attention shapes read off ``model``."""
    params = sum(p.numel() for p in model.parameters())
    return estimate_export_bytes(spec, num_classes, params, imgsz, batch, attention_elements(model))


def check_export_memory(model: Any, spec: Mapping[str, Any], num_classes: int, imgsz: Sequence[int], batch: int,
                        variant: str) -> int:
    """Refuse an export that cannot fit in the memory available now; returns the estimate (bytes)."""
    need = estimate_for_model(model, spec, num_classes, imgsz, batch)
    have = available_bytes()
    if have is not None and need * MARGIN > have:
        h, w = (int(v) for v in imgsz)
        raise ScasegError(f"exporting {variant} at {h}x{w} (batch {batch}) needs about {need / GiB:.1f} GiB of memory "
                          f"(export and parity check), but {have / GiB:.1f} GiB is available; export at a smaller "
                          "--imgsz (a dynamic-size model runs at other sizes: --dynamic spatial) or free memory")
    return need
