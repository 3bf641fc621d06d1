"""Small building blocks shared by the encoders: stochastic depth and the depthwise 3x3 conv wrapper."""
from __future__ import annotations

from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``drop_prob`` (training only)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class DWConv(nn.Module):
    """Depthwise 3x3 conv held as ``.dwconv`` so state-dict keys read ``...dwconv.dwconv.weight`` as upstream."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dwconv(x)


def drop_path_rates(drop_path_rate: float, depths: "list[int] | tuple[int, ...]") -> list[float]:
    """Linearly increasing stochastic-depth rates over all blocks (the usual decay rule)."""
    total = sum(depths)
    # Plain Python, not torch.linspace: models are also built on the meta device (for FLOP counting).
    if total <= 1:
        return [0.0] * total
    return [drop_path_rate * i / (total - 1) for i in range(total)]
