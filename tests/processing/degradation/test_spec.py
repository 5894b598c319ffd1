"""The forward-model spec and degrade() (MRISuperResLib.processing.degradation.spec)."""

from __future__ import annotations

import numpy as np
import pytest

from MRISuperResLib.processing.degradation import KINDS, DegradationSpec, degrade, parse_kind

Shape = tuple[int, int, int]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(8, 6, 5), (7, 10, 11), (16, 12, 3)])
def test_a_constant_volume_stays_constant(kind: str, shape: Shape) -> None:
    result = degrade(np.full((16, 12, 15), 3.7, np.float32), shape, DegradationSpec(kind))
    assert result.shape == shape
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, 3.7, rtol=0, atol=1e-5)


def test_degrade_refuses_a_shape_larger_than_the_input() -> None:
    with pytest.raises(ValueError, match="larger than the input"):
        degrade(np.zeros((8, 8, 8), np.float32), (8, 9, 8), DegradationSpec("box"))


def test_degrade_with_equal_shape_leaves_the_volume_alone() -> None:
    array = np.random.default_rng(6).normal(size=(6, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(degrade(array, array.shape, DegradationSpec("kspace")), array, rtol=0, atol=0)


def test_spec_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="kspace"):
        DegradationSpec("sinc")


def test_spec_from_dict_defaults_to_kspace_and_refuses_unknown_keys() -> None:
    assert DegradationSpec.from_dict(None) == DegradationSpec("kspace", 1.0)
    spec = DegradationSpec.from_dict({"kind": ["kspace", "kspace", "box"], "gap": 0.2, "noise": [0.01, 0.05]})
    assert spec.kinds == ("kspace", "kspace", "box") and spec.noise == (0.01, 0.05)
    assert DegradationSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="valid: kind, fwhm, gap, noise, bias"):
        DegradationSpec.from_dict({"kind": "box", "sigma": 1})


def test_per_axis_kinds_degrade_each_axis_with_its_own_profile() -> None:
    array = np.random.default_rng(3).normal(size=(8, 8, 16)).astype(np.float32)
    mixed = degrade(array, (4, 4, 4), DegradationSpec(("kspace", "kspace", "box")))
    expected = degrade(degrade(array, (4, 4, 16), DegradationSpec("kspace")), (4, 4, 4), DegradationSpec("box"))
    np.testing.assert_allclose(mixed, expected, atol=1e-5)


def test_an_unknown_kind_is_an_error_listing_the_known_kinds_never_a_gaussian() -> None:
    # A spec whose kind slipped past validation (set after construction) must not fall back to another profile.
    spec = DegradationSpec("gaussian")
    object.__setattr__(spec, "kind", "sinc")
    with pytest.raises(ValueError, match=f"unknown forward model 'sinc'; known: {', '.join(KINDS)}$"):
        degrade(np.ones((8, 8, 8), np.float32), (4, 4, 4), spec)
    with pytest.raises(ValueError, match=f"not one of {', '.join(KINDS)} "):
        DegradationSpec(("kspace", "kspace", "sinc"))
    with pytest.raises(ValueError, match=f"not one of {', '.join(KINDS)} "):
        DegradationSpec.from_dict({"kind": "Box"})


def test_parse_kind_reads_one_kind_or_one_per_axis() -> None:
    assert parse_kind("box") == "box"
    assert parse_kind("kspace,kspace,box") == ("kspace", "kspace", "box")
    assert DegradationSpec(parse_kind("kspace,kspace,box")).kinds == ("kspace", "kspace", "box")
    with pytest.raises(ValueError, match="or three of them"):
        DegradationSpec(parse_kind("kspace,box"))  # type: ignore[arg-type]


def test_to_dict_follows_the_fields_and_from_dict_converts_numbers() -> None:
    spec = DegradationSpec(("kspace", "kspace", "gaussian"), fwhm=2.0, gap=0.1, noise=(0.01, 0.02), bias=0.3)
    assert spec.to_dict() == {"kind": ["kspace", "kspace", "gaussian"], "fwhm": 2.0, "gap": 0.1,
                              "noise": [0.01, 0.02], "bias": 0.3}
    read = DegradationSpec.from_dict({"kind": "gaussian", "fwhm": 2, "noise": 0.05})
    assert read == DegradationSpec("gaussian", fwhm=2.0, noise=(0.05, 0.05))
    assert isinstance(read.fwhm, float)
