"""An exponential moving average of the network's weights during training (``optim.ema``).

The average of the weights along the last few hundred or thousand steps sits nearer the centre of the minimum the
optimiser circles around, and often validates better than the last step's weights at no cost at inference (Polyak
and Juditsky 1992; used by most current image-restoration recipes). With ``optim.ema`` every validation scores both
the average and the last weights; the run keeps whichever scores better as ``best.safetensors`` (and so as the
final model), logs both (``val_psnr_average``, ``val_psnr_last_weights`` and the one kept, ``val_weights``, in
``log.csv``) and records in the model file which one it kept (``training.weight_average``). The average is
:class:`torch.optim.swa_utils.AveragedModel` with torch's EMA update; its decay is warmed up as
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average follows a network trained from scratch
closely at first. The update counter stays on the CPU: no device sync.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightAverage"]


class WeightAverage:
    """EMA of ``network``'s parameters and buffers.

    Args:
        network: the network being trained (not changed; the average holds its own copy).
        decay: decay per update, in (0, 1), e.g. 0.999 (an average over about 1000 steps).
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(network, multi_avg_fn=self._blend, use_buffers=True)
        self.averaged.module.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged network (same class and configuration as the trained one)."""
        return self.averaged.module

    def decay_now(self) -> float:
        """The decay of the next update (warmed up over the first updates)."""
        count = int(self.averaged.n_averaged)
        return min(self.decay, (1.0 + count) / (10.0 + count))

    @torch.no_grad()
    def _blend(self, averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor) -> None:
        get_ema_multi_avg_fn(self.decay_now())(averaged, current, count)

    def update(self, network: nn.Module) -> None:
        """Blend ``network``'s current weights in (the first update copies them)."""
        self.averaged.update_parameters(network)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
