"""The WGAN-GP critic's side of adversarial training: its network, optimiser, gradient scaler and updates.

Seed 002 trains the super-resolution network against a Wasserstein critic with gradient penalty (WGAN-GP,
Gulrajani et al. 2017): ``n_critic`` critic updates, each minimising ``critic(fake) - critic(real) +
gp_weight * penalty``, then one generator update (in :mod:`.loop`). Adam with betas ``(0, 0.9)`` as in the paper.

Under data-parallel training (``torchrun``) every process computes the critic's gradients on its own patches and
:func:`.distributed.average_gradients` averages them before each update, so all processes hold the same critic
at every step, as DDP keeps the generator; starting weights are broadcast from rank 0. The critic's weights,
optimiser and gradient scaler are part of the resumable state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import models
from .distributed import DistributedContext, average_gradients, broadcast_module
from .losses import PatchCritic3d, gradient_penalty
from ..engine.mixed_precision import autocast, grad_scaler


class CriticTrainer:
    """The critic and everything needed to update it and to save / restore it.

    Args:
        spec: ``model.critic`` of the config: ``{family, config}`` for a registered model family, otherwise the
            keyword arguments of :class:`.PatchCritic3d` (``channels``, ``layers``).
        lr: critic learning rate.
        device: where the critic lives.
        dtype: the training's autocast type. Only float16 runs the critic in half precision (with its own gradient
            scaler); bfloat16 and float32 training update the critic in float32.
        context: the process's place in a data-parallel job.
    """

    def __init__(self, spec: dict[str, Any], lr: float, device: torch.device, dtype: torch.dtype | None,
                 context: DistributedContext) -> None:
        spec = dict(spec)
        network = (models.create(spec.pop("family"), **spec.get("config", {})) if "family" in spec
                   else PatchCritic3d(**spec))
        self.network: nn.Module = network.to(device)
        self.device = device
        self.dtype = dtype if dtype == torch.float16 else None
        self.context = context
        broadcast_module(self.network, context)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=lr, betas=(0.0, 0.9))
        self.scaler = grad_scaler(device, self.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Critic scores of ``x`` ``(batch, 1, i, j, k)``: a patch-score map."""
        return self.network(x)

    def update(self, real: torch.Tensor, fake: torch.Tensor, steps: int, gp_weight: float) -> dict[str, float]:
        """``steps`` critic updates on one batch of real (target) and fake (generated, detached) patches.

        Returns:
            the last update's critic loss (``critic``) and gradient penalty (``gradient_penalty``).
        """
        for _ in range(steps):
            with autocast(self.device, self.dtype):
                penalty = gradient_penalty(self.network, real, fake, self.scaler)
                loss = (self.network(fake).float().mean() - self.network(real).float().mean()
                        + gp_weight * penalty)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            average_gradients(self.network, self.context)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return {"critic": float(loss.detach()), "gradient_penalty": float(penalty.detach())}

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser and scaler (tensors and numbers only: loadable with ``weights_only=True``)."""
        return {"critic": self.network.state_dict(), "critic_optimizer": self.optimizer.state_dict(),
                "critic_scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (a state without a scaler's entry leaves the scaler fresh)."""
        self.network.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["critic_optimizer"])
        if state.get("critic_scaler"):
            self.scaler.load_state_dict(state["critic_scaler"])
