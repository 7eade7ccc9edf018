"""The variant registry is the one definition export, config validation and the benchmarks read."""

from __future__ import annotations

import inspect

import pytest

from textclf.config import ExportConfig
from textclf.inference.variants import DEFAULT_VARIANTS, VARIANTS, variant_spec, variants_on


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_names_a_builder_that_takes_its_candidates(name: str) -> None:
    from textclf_export.judging import builder_of

    spec = VARIANTS[name]
    builder = builder_of(spec)
    parameters = list(inspect.signature(builder).parameters)
    assert parameters[:2] == ["source", "out"], f"{spec.builder} must take (source, out, **candidate)"
    assert spec.candidates, "at least one candidate (an empty dict: the builder's defaults)"
    for candidate in spec.candidates:
        assert set(candidate) <= set(parameters[2:]), f"{name}: {candidate} is not what {spec.builder} takes"
    if spec.parity_field is not None:
        assert spec.parity_field in ExportConfig.model_fields


def test_defaults_and_devices_come_from_the_registry() -> None:
    assert ExportConfig().variants == list(DEFAULT_VARIANTS)
    assert set(variants_on("cpu")) | set(variants_on("cuda")) == set(VARIANTS)
    assert all(VARIANTS[name].device == "cpu" for name in DEFAULT_VARIANTS)
    with pytest.raises(ValueError, match="unknown variant 'int4'; known variants: fp32"):
        variant_spec("int4")


def test_the_default_list_is_what_served_on_some_cpu_and_the_fp32_reference() -> None:
    # Served per the README's results table and reports/*/default: openvino-int8 (Zen 4, 2026-12-06), int8-qdq-mha
    # (Xeon, Zen 3, Zen 5), int8-qdq (Zen 4, 2026-12-02); fp32 is the parity reference. The rest: --set away.
    assert DEFAULT_VARIANTS == ("fp32", "int8-qdq", "int8-qdq-mha", "openvino-int8")
    assert set(variants_on("cpu")) - set(DEFAULT_VARIANTS) == {
        "optimized",
        "int8-dynamic",
        "int8-static",
        "fp16-cpu",
        "openvino-fp32",
    }
