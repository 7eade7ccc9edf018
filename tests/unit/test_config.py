from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from textclf.config import load_config
from textclf.errors import ConfigError
from textclf.paths import DEFAULT_CONFIG
from textclf_benchmarks.config import BenchmarkConfig


def test_default_yaml_matches_builtin_defaults() -> None:
    # configs/default.yaml is the documented source of every default: it must not drift from the models.
    from_file = load_config(DEFAULT_CONFIG, environ={}, model=BenchmarkConfig)
    assert from_file == BenchmarkConfig()
    listed = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for section, values in BenchmarkConfig().to_dict().items():
        if isinstance(values, dict):
            assert set(listed[section]) == set(values), f"default.yaml section {section} misses keys"


def test_the_core_passes_the_bench_section_through_and_the_benchmarks_type_it() -> None:
    # The core (what the Bento ships) does not know the benchmarks' keys; the CLI's config names their typos.
    assert load_config(DEFAULT_CONFIG, environ={}).bench["load_seconds"] == 20
    with pytest.raises(ConfigError, match=r"bench\.load_secondz: unknown key"):
        load_config(overrides=["bench.load_secondz=3"], environ={}, model=BenchmarkConfig)
    with pytest.raises(ConfigError, match=r"bench\.load_servers\.0"):
        load_config(overrides=["bench.load_servers=[nginx]"], environ={}, model=BenchmarkConfig)


def test_set_overrides_parse_yaml_types() -> None:
    cfg = load_config(
        overrides=["train.epochs=1.5", "export.variants=[fp32, int8-dynamic]", "data.max_rows=100", "run=exp-1"],
        environ={},
    )
    assert cfg.train.epochs == 1.5
    assert cfg.export.variants == ["fp32", "int8-dynamic"]
    assert cfg.data.max_rows == 100
    assert cfg.run_dir == Path("artifacts/exp-1")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.epochz=3", "train.epochz: unknown key"),
        ("nosuch.key=1", "nosuch: unknown key"),
        ("train.batch_size=many", "train.batch_size"),
        ("train.batch_size=0", "train.batch_size"),
        ("data.on_empty_text=ignore", "data.on_empty_text"),
        ("export.variants=[fp32, fp64]", "export.variants: Value error, unknown variant 'fp64'; known variants: fp32"),
        ("export.serving_variant=fp64", "unknown variant 'fp64'"),
        ("export.variants=[]", "export.variants"),
        ("run=../escape", "run"),
    ],
)
def test_bad_override_names_the_key(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(overrides=[override], environ={})


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(overrides=["train.epochs"], environ={})


def test_override_into_a_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match="run is not a section"):
        load_config(overrides=["run.name=x"], environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_config_file_with_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n  dropout: 0.2\n")
    with pytest.raises(ConfigError, match=r"train\.dropout: unknown key"):
        load_config(path, environ={})


def test_config_file_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path, environ={})


def test_environment_overrides_serve_and_set_wins() -> None:
    env = {"TEXTCLF_MAX_BATCH_TOKENS": "16", "TEXTCLF_WORKERS": "4", "TEXTCLF_RUN": "envrun"}
    cfg = load_config(environ=env)
    assert (cfg.serve.max_batch_tokens, cfg.serve.workers, cfg.run) == (16, 4, "envrun")
    assert load_config(overrides=["serve.workers=5"], environ=env).serve.workers == 5


def test_environment_value_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"serve\.workers"):
        load_config(environ={"TEXTCLF_WORKERS": "0"})


def test_api_keys_are_never_written_out() -> None:
    cfg = load_config(environ={"TEXTCLF_API_KEYS": "k" * 20 + ",second-key-0123456789"})
    assert cfg.serve.api_keys is not None and "second-key" in cfg.serve.api_keys.get_secret_value()
    assert "second-key" not in str(cfg.to_dict()) and "kkkk" not in yaml.safe_dump(cfg.to_dict())


def test_pinned_serving_variant_must_be_built() -> None:
    with pytest.raises(ConfigError, match="serving_variant"):
        load_config(overrides=["export.variants=[fp32]", "export.serving_variant=int8-dynamic"], environ={})


def test_a_full_request_must_fit_the_queue() -> None:
    with pytest.raises(ConfigError, match="max_texts_per_request=64 is over max_queued_texts=8"):
        load_config(overrides=["serve.max_queued_texts=8"], environ={})


@pytest.mark.parametrize(
    ("value", "trackers"),
    [
        ("none", []),
        ("null", []),
        ("mlflow", ["mlflow"]),
        ("MLflow,tensorboard", ["mlflow", "tensorboard"]),
        ("[tensorboard, wandb, tensorboard]", ["tensorboard", "wandb"]),
        ("[]", []),
    ],
)
def test_report_to_takes_none_a_name_or_a_list(value: str, trackers: list[str]) -> None:
    assert load_config(environ={}).train.report_to == []
    assert load_config(overrides=[f"train.report_to={value}"], environ={}).train.report_to == trackers


@pytest.mark.parametrize("value", ["mlfow", "[mlflow, comet]", "3", "{a: 1}"])
def test_an_unknown_tracker_lists_the_valid_ones(value: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.report_to: .*none, tensorboard, mlflow, wandb"):
        load_config(overrides=[f"train.report_to={value}"], environ={})


def test_a_removed_key_names_the_removal_and_what_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("export:\n  shape_timing_seconds: 3.0\n")
    for source, overrides in ((path, []), (None, ["export.shape_timing_seconds=1.0"])):
        with pytest.raises(ConfigError) as failure:
            load_config(source, overrides, environ={})
        message = str(failure.value)
        assert "export.shape_timing_seconds was removed" in message and "export.timing_seconds" in message
        assert "unknown key" not in message


def test_a_deploy_names_the_served_variant_in_the_config_or_the_environment() -> None:
    assert load_config(environ={}).serve.variant is None
    assert load_config(environ={"TEXTCLF_SERVE_VARIANT": "fp32"}).serve.variant == "fp32"
    assert load_config(overrides=["serve.variant=int8-qdq"], environ={}).serve.variant == "int8-qdq"
    with pytest.raises(ConfigError, match=r"serve\.variant: Value error, unknown variant 'int9'"):
        load_config(environ={"TEXTCLF_SERVE_VARIANT": "int9"})


def test_confidence_settings_and_the_one_selective_threshold() -> None:
    cfg = load_config(environ={})
    assert cfg.export.fit_confidence is True and cfg.export.multi_label_thresholds == "fixed"
    assert cfg.serve.min_confidence is None and cfg.serve.target_accuracy is None
    assert load_config(environ={"TEXTCLF_TARGET_ACCURACY": "0.95"}).serve.target_accuracy == 0.95
    assert load_config(overrides=["serve.min_confidence=1"], environ={}).serve.min_confidence == 1.0
    with pytest.raises(ConfigError, match="min_confidence and target_accuracy are both set"):
        load_config(overrides=["serve.min_confidence=0.8", "serve.target_accuracy=0.9"], environ={})
    for bad in ("serve.min_confidence=0", "serve.target_accuracy=1.01", "export.multi_label_thresholds=best"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(overrides=[bad], environ={})
