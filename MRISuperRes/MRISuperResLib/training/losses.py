"""Training losses: pixel, structural, frequency, perceptual and adversarial (WGAN-GP).

All take predictions and targets shaped ``(batch, 1, i, j, k)`` in normalised units. The perceptual loss reads
its network weights from a local file the user provides (VGG16 features in torchvision's naming, saved as
``.safetensors``); nothing is ever downloaded. The adversarial term follows seed 002 (sections 2.2 and 3.4.2):
a Wasserstein critic trained ``n_critic`` times per generator step with a gradient penalty, Adam betas (0, 0.9).
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.losses import SSIMLoss
from torch import nn
from torch.nn import functional as F

from ..errors import MRISuperResError


def gradient_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between finite differences along every axis (penalises blurred edges)."""
    total = prediction.new_zeros(())
    for dim in (2, 3, 4):
        total = total + F.l1_loss(torch.diff(prediction, dim=dim), torch.diff(target, dim=dim))
    return total / 3


def fft_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between Fourier magnitudes (orthonormal 3D FFT), which weighs high frequencies evenly."""
    return F.l1_loss(torch.fft.rfftn(prediction.float(), dim=(2, 3, 4), norm="ortho").abs(),
                     torch.fft.rfftn(target.float(), dim=(2, 3, 4), norm="ortho").abs())


#: VGG16 ``features`` layers up to relu3_3: (kind, in, out) in torchvision's index order.
_VGG16_LAYERS = (
    ("conv", 3, 64), ("relu",), ("conv", 64, 64), ("relu",), ("pool",),
    ("conv", 64, 128), ("relu",), ("conv", 128, 128), ("relu",), ("pool",),
    ("conv", 128, 256), ("relu",), ("conv", 256, 256), ("relu",), ("conv", 256, 256), ("relu",),
)


class VGGFeatures(nn.Module):
    """VGG16 convolutional features up to relu3_3 (no torchvision needed), frozen, returning relu1_2, relu2_2,
    relu3_3. Weights load from a ``.safetensors`` file with torchvision's ``features.N.weight/bias`` names."""

    taps = (3, 8, 15)

    def __init__(self, weights_file: str | Path) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for spec in _VGG16_LAYERS:
            if spec[0] == "conv":
                layers.append(nn.Conv2d(spec[1], spec[2], 3, padding=1))
            elif spec[0] == "relu":
                layers.append(nn.ReLU(inplace=False))
            else:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        path = Path(weights_file)
        if not path.is_file():
            raise MRISuperResError(f"perceptual weights {path} do not exist; give a local VGG16 .safetensors file")
        from safetensors.torch import load_file

        state = {k: v for k, v in load_file(str(path)).items() if k.startswith("features.")}
        wanted = {k for k in self.state_dict()}
        missing = sorted(wanted - set(state))
        if missing:
            raise MRISuperResError(f"perceptual weights {path} lack {', '.join(missing[:3])}; expected VGG16 features")
        self.load_state_dict({k: state[k] for k in wanted})
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


class PerceptualLoss(nn.Module):
    """Mean L1 distance of VGG16 features over the slices of all three orientations (2.5D), as seed 001 used
    the first convolutional blocks of VGG16."""

    def __init__(self, weights_file: str | Path) -> None:
        super().__init__()
        self.features = VGGFeatures(weights_file)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for dim in (2, 3, 4):
            total = total + sum(
                F.l1_loss(a, b) for a, b in zip(self.features(_slices(prediction, dim)),
                                                self.features(_slices(target, dim)))
            )
        return total / 3


def _slices(volume: torch.Tensor, dim: int) -> torch.Tensor:
    """``(batch, 1, i, j, k)`` -> 2D images ``(batch * n, 1, h, w)`` cut along ``dim``."""
    moved = volume.movedim(dim, 1)
    return moved.reshape(-1, 1, *moved.shape[3:])


class PatchCritic3d(nn.Module):
    """Wasserstein critic on 3D patches: strided convolutions, layer normalisation (GroupNorm with one group),
    LeakyReLU(0.2), a 1-channel map of patch scores (seed 002, figure 30, in 3D; no batch norm, which would
    break the gradient penalty).

    Args:
        channels: channels of the first layer, doubled at each stride-2 layer.
        layers: number of stride-2 layers.
    """

    def __init__(self, channels: int = 16, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv3d(1, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(layers - 1):
            blocks += [nn.Conv3d(width, width * 2, 3, stride=2, padding=1), nn.GroupNorm(1, width * 2),
                       nn.LeakyReLU(0.2)]
            width *= 2
        blocks.append(nn.Conv3d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad critic(x_hat)|| - 1)^2]`` on random interpolates of real and fake
    (Gulrajani et al., "Improved Training of Wasserstein GANs", 2017).

    With an enabled ``scaler`` (float16 training) the critic's scores are scaled before the inner gradient and
    the gradient unscaled after it, so that it does not underflow in half precision (the recipe of PyTorch's
    automatic mixed precision examples); the penalty itself is computed in float32.
    """
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    outputs = critic(mixed).float().sum()
    scaled = scaler is not None and scaler.is_enabled()
    if scaled:
        outputs = scaler.scale(outputs)  # type: ignore[union-attr]
    (grads,) = torch.autograd.grad(outputs, mixed, create_graph=True)
    grads = grads.float()
    if scaled:
        grads = grads / scaler.get_scale()  # type: ignore[union-attr]
    return ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()


class ReconstructionLoss(nn.Module):
    """Weighted sum of the non-adversarial terms; :meth:`forward` returns the total and each term's value."""

    def __init__(self, l1: float = 1.0, mse: float = 0.0, ssim: float = 0.0, gradient: float = 0.0,
                 fft: float = 0.0, perceptual: float = 0.0, perceptual_weights: str | Path | None = None,
                 spatial_dims: int = 3) -> None:
        super().__init__()
        self.weights = {"l1": l1, "mse": mse, "ssim": ssim, "gradient": gradient, "fft": fft,
                        "perceptual": perceptual}
        if not any(self.weights.values()):
            raise MRISuperResError("every loss weight is 0; give at least one positive weight (e.g. loss.l1: 1)")
        self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=1.0, win_size=7) if ssim > 0 else None
        self.perceptual = PerceptualLoss(perceptual_weights) if perceptual > 0 else None  # type: ignore[arg-type]

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        terms: dict[str, torch.Tensor] = {}
        if self.weights["l1"]:
            terms["l1"] = F.l1_loss(prediction, target)
        if self.weights["mse"]:
            terms["mse"] = F.mse_loss(prediction, target)
        if self.ssim is not None:
            terms["ssim"] = self.ssim(prediction.float(), target.float())
        if self.weights["gradient"]:
            terms["gradient"] = gradient_loss(prediction, target)
        if self.weights["fft"]:
            terms["fft"] = fft_loss(prediction, target)
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(prediction.float(), target.float())
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, {name: float(value.detach()) for name, value in terms.items()}  # type: ignore[return-value]
