"""Training configuration: a YAML (or JSON) file read into typed sections, unknown keys refused.

Relative paths and globs in ``data`` (and ``model.init_from``, ``loss.perceptual_weights``) are resolved against
the config file's folder; a relative ``output_dir`` against the working directory (:meth:`TrainConfig.output_path`),
so a copied recipe writes where it is run, not beside the recipe it came from. Every section and its
defaults are documented on its dataclass; ``configs/`` holds an example for every model family.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import MRISuperResError


class ConfigError(MRISuperResError):
    """The training configuration is invalid (unknown keys, wrong types, impossible values)."""


@dataclass
class ModelSection:
    """Which network to train.

    Attributes:
        family: a registry family name (``MRISuperResLib.models.FAMILIES``).
        config: the family's constructor arguments (its ``scale`` sets the training scale for fixed-scale families).
        critic: family and config of the patch critic for adversarial training (``{}``: built-in 3D critic).
        init_from: an engine model file (``.safetensors``) of the same family and config to start from
            (fine-tuning, or continuing a finished training with new data or settings).
        init_partial: with ``init_from``, the file may differ in config (another scale, say): every tensor whose
            name and shape match is copied, the rest (e.g. the upsampler of another factor) keeps its fresh
            initialisation. The family must still match, and at least one tensor must.
        init_grow: with ``init_from``, the model is a wider and/or deeper ``edsr3d`` (more ``channels``, more
            ``blocks``, every other setting equal) that starts computing exactly what the file computes
            (:func:`~MRISuperResLib.models.edsr3d.grow_state_dict`): capacity added without losing the training
            already done.
    """

    family: str = "edsr3d"
    config: dict[str, Any] = field(default_factory=dict)
    critic: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    init_partial: bool = False
    init_grow: bool = False


@dataclass
class DataSection:
    """Training data.

    Attributes:
        train: high-resolution volumes (paths or globs) to simulate low-resolution inputs from.
        validation: volumes held out for validation (inputs simulated with ``degradation``); when empty and no
            ``validation_pairs`` are given, ``validation_fraction`` of the ``train`` subjects.
        validation_fraction: share of subjects held out when ``validation`` is empty (at least one).
        pairs: real pairs ``{high: path, low: path, register: true, mask: path, exclude_slices: ...}``; the
            low-resolution member is registered onto the high-resolution one (``register``: ``true``/``affine``,
            ``deformable`` for a B-spline stage after the affine one, ``false``) and resampled onto the coarse grid
            over its extent.
        validation_pairs: real pairs held out for validation, same form as ``pairs`` and registered the same way;
            their baseline is the registered input itself upsampled onto the target grid (at scale 1: the input
            resampled onto the target grid), see :mod:`.loading`.
        exclude_slices: corrupted slices to leave out of training targets and validation metrics, by volume file
            name: ``{t1.nii.gz: {axis: 2, indices: [3, 7]}}``, ``{mask: bad_voxels.nii.gz}`` or a list of those;
            0-based indices of the file as stored (see :mod:`MRISuperResLib.processing.exclusion`).
        masks: user-supplied foreground masks by volume file name (``{t1.nii.gz: t1_brain_mask.nii.gz}``),
            used for patch sampling and masked validation metrics instead of the threshold mask.
        scale: per-axis scale ``(i, j, k)``; taken from the model config when omitted.
        degradation: the model's nominal forward model, noise and bias (see ``degradation.DegradationSpec``):
            stored in the model file, used by the consistency map and for validation inputs.
        acquisition: when given (a mapping, ``{}`` for the defaults), training inputs are simulated with the
            scanner-like variation of ``acquisition.AcquisitionRanges`` (slice profiles and gaps, apodisation,
            partial Fourier, Rician noise, bias fields, contrast) instead of ``degradation``; ``null`` (default):
            training inputs follow ``degradation``.
        normalization: clipped-percentile normalisation ``{lower_percentile, upper_percentile, clip}`` (see
            ``normalization.NormalizationSettings``; ``clip`` defaults to true), one function at training and
            inference time (stored in the trained model's metadata).
        patch_size: low-resolution patch size (voxels, ``i, j, k``); the high-resolution patch is ``scale`` times it.
        batch_size: patches per step (per process with DDP).
        foreground_fraction: share of patches centred inside the foreground mask.
        resimulate_every: steps between fresh simulations (new noise levels, bias fields, contrast augmentation).
        n4: N4 bias-field correction of the volumes first: ``false``, ``true`` (default settings) or a mapping of
            ``MRISuperResLib.processing.n4.N4Settings`` (``shrink``, ``iterations``, ``convergence``, ``fwhm``,
            ``wiener_noise``, ``control_points``, ``mask``, ``two_pass``, ``second_mask``).
        foreground: the mask of a volume without one in ``masks``: ``threshold`` (robust percentile threshold and
            morphology), ``head`` or ``brain`` (``MRISuperResLib.processing.masks``: skull stripping without trained weights);
            patches are centred in it, crops and masked validation metrics follow it.
        crop_foreground: crop empty background around the head before training.
        validation_crop: validate on a central low-resolution crop of this size (``null``: the whole volume).
        scale_range: arbitrary-scale families only: ``[low, high]``, a scale drawn uniformly per step (any real
            factor, seed 004); validation stays at ``scale`` (whole factors). ``null``: the one ``scale``.
        sample_coordinates: arbitrary-scale families only: fine voxels decoded per patch (seed 004's ``K``, 8000),
            drawn at random; ``null`` with ``scale_range``: every voxel of the patch interior.
        context: conditioning of a cross-attention model (seed 002): ``{variables: {name: {kind, offset, scale,
            categories}}, subjects: {file name: {name: value}}}`` (see :mod:`MRISuperResLib.engine.conditioning`); the
            model's ``context_dim`` follows from the variables; stored in the trained model's metadata.
    """

    train: list[str] = field(default_factory=list)
    validation: list[str] = field(default_factory=list)
    validation_fraction: float = 0.2
    pairs: list[dict[str, Any]] = field(default_factory=list)
    validation_pairs: list[dict[str, Any]] = field(default_factory=list)
    exclude_slices: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, str] = field(default_factory=dict)
    scale: list[float] | None = None
    degradation: dict[str, Any] = field(default_factory=lambda: {"kind": "kspace"})
    acquisition: dict[str, Any] | None = None
    normalization: dict[str, Any] = field(
        default_factory=lambda: {"lower_percentile": 1.0, "upper_percentile": 99.0}
    )
    patch_size: list[int] = field(default_factory=lambda: [24, 24, 24])
    batch_size: int = 4
    foreground_fraction: float = 0.9
    resimulate_every: int = 250
    n4: bool | dict[str, Any] = False
    foreground: str = "threshold"
    crop_foreground: bool = True
    validation_crop: list[int] | None = None
    scale_range: list[float] | None = None
    sample_coordinates: int | None = None
    context: dict[str, Any] | None = None


@dataclass
class AugmentSection:
    """Augmentation, applied identically to both members of a pair.

    Attributes:
        flips: random flips along every axis.
        rot90: random 90-degree rotations in planes whose two axes share scale and patch size (with flips: the
            eight variants of seed 000 in-plane, 48 in 3D).
        intensity_scale: ``[low, high]`` multiplicative intensity factor.
        intensity_shift: ``[low, high]`` additive shift in normalised units.
        noise: ``[low, high]`` standard deviation of extra Gaussian noise on the low-resolution patch.
        gmm_contrast: probability of the Gaussian-mixture contrast augmentation (seed 002, section 1.3.1) at
            each re-simulation.
        elastic: elastic or grid distortion of whole subjects, the same deformation for both members of a pair
            (``{probability, kind: elastic|grid, max_displacement_mm, control_spacing_mm}``, see
            ``training.augment.ElasticSettings``; ``null``: off).
    """

    flips: bool = True
    rot90: bool = True
    intensity_scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    intensity_shift: list[float] = field(default_factory=lambda: [-0.05, 0.05])
    noise: list[float] = field(default_factory=lambda: [0.0, 0.0])
    gmm_contrast: float = 0.0
    elastic: dict[str, Any] | None = None


@dataclass
class LossSection:
    """Loss weights (0 disables a term).

    Attributes:
        l1, mse, ssim: pixel losses (SSIM from MONAI, 3D).
        gradient: L1 of finite differences (edges).
        fft: L1 of the Fourier magnitude difference.
        perceptual: weight of the perceptual loss; needs ``perceptual_weights``.
        perceptual_weights: local ``.safetensors`` file with VGG16 feature weights (torchvision names
            ``features.N.weight``); nothing is downloaded.
        adversarial: weight of the WGAN-GP generator term.
        n_critic: critic updates per generator update.
        gp_weight: gradient-penalty weight.
        critic_lr: critic learning rate (Adam, betas (0, 0.9) as in seed 002).
        stability: weight of the stability term (stability training, Zheng et al., CVPR 2016): each step the
            network also sees its batch with more noise on the inputs (white Gaussian noise of a standard deviation
            drawn per sample from ``stability_noise``), the pixel losses are taken on that noisy twin's output and
            this weight times the L1 between it and the output on the batch as drawn (no gradient through the
            latter) is added, so the noise added to an input is taught not to reach the output. About 1.3x the
            time per step (one more forward pass). 0: off.
        stability_noise: ``[low, high]`` standard deviation of that noise in normalised units (the input's 1st-99th
            percentile range is 1, so about the fraction of the 99th percentile that ``evaluate --noise`` uses for
            images whose 1st percentile is near 0).
    """

    l1: float = 1.0
    mse: float = 0.0
    ssim: float = 0.0
    gradient: float = 0.0
    fft: float = 0.0
    perceptual: float = 0.0
    perceptual_weights: str | None = None
    adversarial: float = 0.0
    n_critic: int = 5
    gp_weight: float = 10.0
    critic_lr: float = 1e-4
    stability: float = 0.0
    stability_noise: list[float] = field(default_factory=lambda: [0.0, 0.03])


@dataclass
class OptimSection:
    """Optimiser and learning-rate schedule.

    Attributes:
        name: ``adam`` or ``adamw``.
        lr: initial learning rate.
        weight_decay: weight decay.
        betas: Adam betas.
        grad_clip: gradient-norm clipping (0: off).
        schedule: ``none``, ``plateau`` (ReduceLROnPlateau on validation PSNR), ``step``, ``exponential`` or
            ``cosine`` (cosine annealing from ``lr`` to ``min_lr`` over ``run.steps``).
        factor: multiplicative decay (plateau / step) or ``gamma`` per step (exponential).
        patience: validations without improvement before a plateau decay.
        step_size: steps between decays for ``step``.
        min_lr: floor of the learning rate.
        ema: decay of an exponential moving average of the weights (e.g. 0.999: about the last 1000 steps);
            every validation scores the average and the last weights and keeps the better as the best model
            (:mod:`.weight_average`); 0 or null: off.
        warmup_steps: the (generator's) learning rate rises linearly from ``lr / warmup_steps`` to the schedule's
            rate over the run's first ``warmup_steps`` optimiser steps (0: off). Adam's first updates move every
            weight by about the learning rate whatever its gradient, which costs a model started from ``init_from``
            (a shipped or grown model) much of what it could do before the run starts improving it (Goyal et al.
            2017's gradual warmup). A resumed run past the warmup does not warm up again; a new stage does.
    """

    name: str = "adam"
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0
    schedule: str = "plateau"
    factor: float = 0.5
    patience: int = 3
    step_size: int = 5000
    min_lr: float = 1e-6
    ema: float = 0.0
    warmup_steps: int = 0


@dataclass
class RunSection:
    """How long and where.

    Attributes:
        steps: optimisation steps in total.
        validate_every: steps between validations (PSNR/SSIM on the validation subjects).
        early_stop_patience: validations without a new best before stopping (0: never).
        checkpoint_every: steps between resumable state saves.
        log_every: steps between CSV log rows.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        amp: mixed precision: bf16/fp16 autocast on CUDA, bf16 on CPUs with bfloat16 instructions (about 2x
            faster steps there; :func:`.precision.training_dtype`); ``false``: float32 everywhere.
        threads: CPU threads (``null``: torch default).
        tensorboard: also log to TensorBoard (needs the ``tensorboard`` package).
        max_minutes: wall-clock budget of the run in this process (minutes, data loading included; ``null``:
            none). The run is planned to end inside it: from the measured time per step, ``steps`` is
            lowered to what fits (a cosine schedule is refitted to end at ``min_lr`` there), and the run finishes
            normally at the last step, best model written; ``--resume`` continues towards the configured
            ``steps``. For batch queues with wall-time limits and short accelerator leases.
        prefetch: batches drawn ahead on a background thread, the next simulation of the training volumes
            (``data.resimulate_every``) on a thread pool, while the device runs the current step
            (:mod:`.prefetch`); the same batches and result as without. ``0``: off, every refresh and batch inside
            the step; ``null``: 4 on a GPU or MPS, off on CPU (where the network's step uses every core anyway);
            at most 64. Fixed-scale runs; arbitrary-scale runs draw their points in the step (a line says so).
    """

    steps: int = 2000
    validate_every: int = 250
    early_stop_patience: int = 10
    checkpoint_every: int = 100
    log_every: int = 10
    device: str = "auto"
    amp: bool = True
    threads: int | None = None
    tensorboard: bool = False
    max_minutes: float | None = None
    prefetch: int | None = None


@dataclass
class TrainConfig:
    """A whole training run.

    Attributes:
        name: name of the trained model (metadata and file name).
        output_dir: folder for checkpoints, logs and the final model; a relative one is taken from the working
            directory (see :meth:`output_path`).
        seed: seed of every random choice; the same seed gives the same run, resumed or not.
        description: one line stored in the model's metadata.
        version: version stored in the model's metadata.
    """

    name: str = "model"
    output_dir: str = "runs/model"
    seed: int = 0
    description: str = ""
    version: str = "0.1.0"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
    base_dir: Path = field(default=Path("."), repr=False)

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def output_path(self) -> Path:
        """The absolute output folder: ``output_dir`` as given when absolute, else under the working directory."""
        return Path(self.output_dir).expanduser().resolve()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("base_dir")
        return data


_SECTIONS = {"model": ModelSection, "data": DataSection, "augment": AugmentSection, "loss": LossSection,
             "optim": OptimSection, "run": RunSection}


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {where} must be a mapping, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.name != "base_dir"]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(names)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _build(_SECTIONS[name], value, name) if where == "config" and name in _SECTIONS else value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any], base_dir: Path = Path(".")) -> TrainConfig:
    """Build and check a :class:`TrainConfig` from a plain mapping."""
    config = _build(TrainConfig, values, "config")
    config.base_dir = base_dir
    _check(config)
    return config


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML or JSON training configuration, with its ``base:`` chain merged in (see :func:`read_values`).

    Relative paths in the merged configuration are taken from the folder of ``path`` (the keys of a base are read
    as if written in the file that names it).

    Raises:
        ConfigError: unreadable file, a missing or circular base, unknown keys (listing the valid ones), or
            impossible values.
    """
    path = Path(path)
    return config_from_dict(read_values(path), path.resolve().parent)


def read_values(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a configuration file with its ``base:`` merged in.

    ``base: other.yaml`` (relative to the file's own folder) names a configuration the file extends: the base's
    mapping is read first (its own base too), then the file's keys are merged over it: mappings merge key by key,
    recursively; any other value (lists included) replaces the base's.

    Raises:
        ConfigError: the file (or a base) is missing or unreadable, ``base`` is not a file name, or the bases form
            a cycle.
    """
    if not path.is_file():
        named = f" (the base of {_chain[-1]})" if _chain else ""
        what = "is a folder, not a config file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config {path}{named} {what}")
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain[_chain.index(resolved):], resolved))
        raise ConfigError(f"config bases form a cycle: {cycle}; remove one of these base: keys")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {str(error).splitlines()[0]}") from None
    values = values or {}
    if not isinstance(values, dict) or "base" not in values:
        return values  # a file that is not a mapping is refused by config_from_dict
    base = values.pop("base")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"base in {path} must be the file name of another config, got {base!r}")
    base_path = Path(base).expanduser()
    base_path = base_path if base_path.is_absolute() else resolved.parent / base_path
    base_values = read_values(base_path, (*_chain, resolved))
    if not isinstance(base_values, dict):
        raise ConfigError(f"config {base_path} (the base of {path}) must be a mapping of sections, got "
                          f"{type(base_values).__name__}")
    return merge_values(base_values, values)


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base`` (neither is modified): mappings merge recursively, other values replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_config(config: TrainConfig) -> None:
    """Check a config (as loading does), e.g. again after command-line overrides.

    Raises:
        ConfigError: the first value no run can have, named.
    """
    _check(config)


def _check(config: TrainConfig) -> None:
    from .. import models
    from ..processing.degradation import DegradationSpec

    if config.model.family not in models.FAMILIES:
        raise ConfigError(f"unknown model family {config.model.family!r}; known: {', '.join(models.FAMILIES)}")
    for flag in ("init_partial", "init_grow"):
        value = getattr(config.model, flag)
        if not isinstance(value, bool):
            raise ConfigError(f"model.{flag} must be true or false, got {value!r}")
        if value and not config.model.init_from:
            raise ConfigError(f"model.{flag} needs model.init_from: the model file to start from")
    if config.model.init_partial and config.model.init_grow:
        raise ConfigError("model.init_partial and model.init_grow exclude each other; set one of them")
    if config.model.init_grow and config.model.family != "edsr3d":
        raise ConfigError(f"model.init_grow grows an edsr3d model into a wider or deeper edsr3d; model.family is "
                          f"{config.model.family}")
    try:
        DegradationSpec.from_dict(config.data.degradation)
    except ValueError as error:
        raise ConfigError(f"data.degradation: {error}") from None
    if config.data.acquisition is not None:
        from ..processing.degradation.acquisition import AcquisitionRanges

        if not isinstance(config.data.acquisition, dict):
            raise ConfigError("data.acquisition must be a mapping of ranges ({} for the defaults) or null")
        try:
            AcquisitionRanges.from_dict(config.data.acquisition)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"data.acquisition: {error}") from None
    from ..processing.normalization import NormalizationSettings

    try:
        NormalizationSettings.from_dict(config.data.normalization)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.normalization: {error}") from None
    from ..processing.n4 import N4Settings
    from .augment import ElasticSettings

    try:
        N4Settings.from_config(config.data.n4)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.n4: {error}") from None
    if config.data.foreground not in ("threshold", "head", "brain"):
        raise ConfigError(f"data.foreground {config.data.foreground!r} is not threshold, head or brain")
    try:
        ElasticSettings.from_config(config.augment.elastic)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"augment.elastic: {error}") from None
    if config.optim.name not in ("adam", "adamw"):
        raise ConfigError(f"optim.name {config.optim.name!r} is not adam or adamw")
    if config.optim.schedule not in ("none", "plateau", "step", "exponential", "cosine"):
        raise ConfigError(f"optim.schedule {config.optim.schedule!r} is not none, plateau, step, exponential or "
                          "cosine")
    if len(config.data.patch_size) != 3 or min(config.data.patch_size) < 4:
        raise ConfigError(f"data.patch_size must be three sizes >= 4, got {config.data.patch_size}")
    if config.run.steps < 1 or config.run.validate_every < 1 or config.data.batch_size < 1:
        raise ConfigError("run.steps, run.validate_every and data.batch_size must be positive")
    budget = config.run.max_minutes
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not 0 < budget < math.inf):
        raise ConfigError(f"run.max_minutes must be a positive, finite number of minutes or null, got {budget!r}")
    ema = config.optim.ema = 0.0 if config.optim.ema is None else config.optim.ema
    if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0.0 <= ema < 1.0:
        raise ConfigError(f"optim.ema must be a decay in [0, 1) (0: off; e.g. 0.999), got {ema!r}")
    warmup = config.optim.warmup_steps
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"optim.warmup_steps must be a whole number of steps >= 0 (0: off), got {warmup!r}")
    ahead = config.run.prefetch
    if ahead is not None and (isinstance(ahead, bool) or not isinstance(ahead, int) or not 0 <= ahead <= 64):
        raise ConfigError(f"run.prefetch must be a number of batches from 0 (off) to 64, or null (4 on a GPU), "
                          f"got {ahead!r}")
    if not 0.0 < config.data.validation_fraction < 1.0:
        raise ConfigError("data.validation_fraction must be between 0 and 1")
    _check_point_sampling(config)
    if config.data.context is not None:
        from ..engine.conditioning import check_context_config

        try:
            check_context_config(config.data.context, config.model.family, config.model.config)
        except ValueError as error:
            raise ConfigError(f"data.context: {error}") from None
    _check_stability(config.loss)
    if config.loss.perceptual > 0 and not config.loss.perceptual_weights:
        raise ConfigError("loss.perceptual needs loss.perceptual_weights: a local .safetensors file of VGG16 weights")


def _check_stability(loss: LossSection) -> None:
    weight, noise = loss.stability, loss.stability_noise
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight < float("inf"):
        raise ConfigError(f"loss.stability must be a weight >= 0 (0: off; e.g. 1.0), got {weight!r}")
    if (not isinstance(noise, list) or len(noise) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                            for v in noise) or not 0.0 <= noise[0] <= noise[1] < 1.0):
        raise ConfigError(f"loss.stability_noise must be [low, high] noise standard deviations in normalised units, "
                          f"0 <= low <= high < 1 (e.g. [0.0, 0.03]), got {noise!r}")
    if weight > 0 and noise[1] == 0:
        raise ConfigError("loss.stability needs noise to add: loss.stability_noise is [0, 0]; e.g. [0.0, 0.03]")


def _check_point_sampling(config: TrainConfig) -> None:
    """``scale_range`` / ``sample_coordinates``: arbitrary-scale families, pixel losses only (points, not patches)."""
    data = config.data
    if data.scale_range is None and data.sample_coordinates is None:
        return
    from .. import models

    if models.family_spec(config.model.family).scales(config.model.config) is not None:
        raise ConfigError(f"data.scale_range and data.sample_coordinates need an arbitrary-scale family (arssr); "
                          f"{config.model.family} trains at one scale (data.scale)")
    if data.scale_range is not None:
        values = data.scale_range
        if (not isinstance(values, list) or len(values) != 2 or not all(isinstance(v, (int, float)) for v in values)
                or not 1.0 <= values[0] <= values[1]):
            raise ConfigError(f"data.scale_range must be [low, high] with 1 <= low <= high, got {values}")
    if data.sample_coordinates is not None and (not isinstance(data.sample_coordinates, int)
                                                or data.sample_coordinates < 1):
        raise ConfigError(f"data.sample_coordinates must be a positive whole number, got {data.sample_coordinates}")
    loss = config.loss
    if loss.ssim or loss.gradient or loss.fft or loss.perceptual or loss.adversarial or loss.stability:
        raise ConfigError("with data.scale_range / data.sample_coordinates the loss sees scattered points: use "
                          "loss.l1 and loss.mse only (set ssim, gradient, fft, perceptual, adversarial, stability "
                          "to 0)")
    if data.acquisition is not None or config.augment.gmm_contrast > 0 or data.pairs:
        raise ConfigError("data.scale_range / data.sample_coordinates simulate each patch with data.degradation: "
                          "remove data.acquisition, data.pairs and augment.gmm_contrast")
