"""Training and ``enhance`` normalise the network input with one function (normalize_network_input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model
from MRISuperResLib.engine import enhance as enhance_module
from MRISuperResLib.processing.degradation import DegradationSpec
from MRISuperResLib.processing.normalization import NormalizationSettings, normalize_network_input
from MRISuperResLib.training.config import ConfigError, config_from_dict
from MRISuperResLib.training.data import load_subject, refresh_subject
from MRISuperResLib.imaging.volume import Volume
from helpers import tiny_config


@pytest.mark.parametrize("clip", [True, False])
def test_training_input_is_what_enhance_feeds_the_network(brain_files: list[Path], tmp_path: Path,  # noqa: F811
                                                          monkeypatch: pytest.MonkeyPatch, clip: bool) -> None:
    settings = NormalizationSettings(clip=clip)
    subject = load_subject(brain_files[0], (2, 2, 2), normalization=settings, crop_foreground=False, n4=False)
    simulated: dict[str, np.ndarray] = {}
    monkeypatch.setattr("MRISuperResLib.training.data.simulate",
                        lambda high, shape, spec, rng: simulated.setdefault("low", high[::2, ::2, ::2] * 3.0 + 5.0))
    refresh_subject(subject, DegradationSpec.from_dict({"kind": "kspace"}), np.random.default_rng(0), settings)
    raw_low = simulated["low"]
    assert subject.low is not None and subject.baseline is not None
    # Bright voxels above the 99th percentile exist: clipping makes a difference on this volume.
    _, unclipped = normalize_network_input(raw_low, NormalizationSettings(clip=False))
    assert unclipped.max() > 1.05

    # enhance, given the same low-resolution volume and a model trained with these settings, feeds its network
    # exactly the training input (training holds it in float16).
    model = make_tiny_model(tmp_path / "m.safetensors", normalization=settings.to_dict())
    seen = []
    real = enhance_module.normalize_network_input

    def spy(array: np.ndarray, used: NormalizationSettings):  # type: ignore[no-untyped-def]
        seen.append(used)
        result = real(array, used)
        seen.append(result[1])
        return result

    monkeypatch.setattr(enhance_module, "normalize_network_input", spy)
    low_volume = Volume(raw_low.astype(np.float32), subject.low_grid)
    enhance_module.enhance_volume(low_volume, str(model), (2, 2, 2), device="cpu", consistency=False)
    assert seen[0] == settings
    np.testing.assert_array_equal(seen[1].astype(np.float16), subject.low)
    if clip:
        assert subject.low.min() >= 0 and subject.low.max() <= 1
    else:
        assert subject.low.max() > 1.05
    # The baseline is the B-spline of the unclipped input either way, as enhance upsamples the volume itself.
    assert float(subject.baseline.max()) > 1.05


def test_normalization_settings_are_checked_and_stored(brain_files: list[Path], tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="data.normalization: unknown normalisation key"):
        config_from_dict(tiny_config(brain_files, tmp_path / "a", data={"normalization": {"clipping": True}}))
    with pytest.raises(ConfigError, match="data.normalization: percentiles"):
        config_from_dict(tiny_config(brain_files, tmp_path / "b", data={"normalization": {"lower_percentile": 99,
                                                                                          "upper_percentile": 1}}))
    assert NormalizationSettings.from_dict(None) == NormalizationSettings(1.0, 99.0, True)
    assert NormalizationSettings.from_dict({"clip": False}).to_dict() == {"lower_percentile": 1.0,
                                                                         "upper_percentile": 99.0, "clip": False}


def test_a_model_with_broken_normalization_metadata_is_refused(small_real_volume: Volume, tmp_path: Path) -> None:
    from MRISuperResLib.errors import ModelError

    model = make_tiny_model(tmp_path / "m.safetensors", normalization={"lower_percentile": 50, "upper_percentile": 5})
    with pytest.raises(ModelError, match="unusable normalization metadata"):
        enhance_module.enhance_volume(small_real_volume, str(model), (2, 2, 2), device="cpu", consistency=False)
