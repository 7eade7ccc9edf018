"""Drift (issue 37, first phase): the numpy statistics against scipy's, the per-worker window, the report and its
one-second cache, the alarm's false-alarm rate and power on synthetic answers, and the `reference.npz` file."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from textclf.artifacts.drift_reference import (
    SIGNALS,
    DriftReferenceRecord,
    ReferenceData,
    read_reference,
    write_reference,
)
from textclf.errors import ArtifactError, ConfigError, ExportError
from textclf.inference.confidence import calibrated_probabilities
from textclf.serving.drift import (
    DriftMonitor,
    DriftReference,
    DriftWindow,
    WindowSnapshot,
    chi_square_statistic,
    count_words,
    evaluate,
    ks_statistic,
    reference_label_mix,
    tokens_per_word,
)
from textclf_export.drift_reference import DEFAULT_LEVEL, build_reference, write_drift_reference
from textclf_export.drift_reference import critical_values as export_critical_values

WINDOW = 1000
REFERENCE_TEXTS = 1276  # the test split's size in the false-alarm trial
critical_values = functools.lru_cache(export_critical_values)  # scipy's inverses are the slow part of a trial


# -- statistics against scipy ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "sizes"),
    [
        ("continuous", (1000, 1276)),
        ("continuous", (7, 3)),
        ("ties", (1000, 1276)),
        ("ties", (50, 13)),
        ("equal", (40, 40)),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_statistic_equals_scipy(kind: str, sizes: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    a: np.ndarray
    b: np.ndarray
    if kind == "continuous":
        a, b = rng.normal(size=sizes[0]), rng.normal(0.1, 1.2, size=sizes[1])
    elif kind == "ties":  # few distinct values, like token counts
        a, b = rng.integers(0, 6, size=sizes[0]), rng.integers(1, 8, size=sizes[1])
    else:
        a = rng.integers(0, 3, size=sizes[0])
        b = a.copy()
        b[:5] += 1
    expected = stats.ks_2samp(a, b).statistic
    assert ks_statistic(a, b) == pytest.approx(expected, abs=1e-9)
    assert ks_statistic(b, a) == pytest.approx(expected, abs=1e-9)


def test_ks_statistic_of_tied_samples_counts_each_value_once() -> None:
    # CDFs read at each value with its multiplicity: [1,1,2] vs [1,2,2] differ by 1/3 after 1, nothing after 2.
    assert ks_statistic([1, 1, 2], [1, 2, 2]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="both samples"):
        ks_statistic([], [1.0])


@pytest.mark.parametrize("seed", range(5))
def test_chi_square_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = int(rng.integers(2, 7))
    proportions = reference_label_mix(rng.integers(0, labels, size=REFERENCE_TEXTS), labels)
    observed = np.bincount(rng.integers(0, labels, size=WINDOW), minlength=labels)
    expected = proportions * WINDOW
    assert chi_square_statistic(observed, expected) == pytest.approx(
        stats.chisquare(observed, expected).statistic, abs=1e-9
    )


def test_chi_square_refuses_what_would_make_it_meaningless() -> None:
    with pytest.raises(ValueError, match="positive"):
        chi_square_statistic([1, 2], [3, 0])
    with pytest.raises(ValueError, match="shape"):
        chi_square_statistic([1, 2, 3], [3, 3])


def test_a_label_the_reference_never_answered_gets_half_a_count() -> None:
    mix = reference_label_mix([0, 0, 0, 2], num_labels=3)
    assert mix == pytest.approx(np.array([3, 0.5, 1]) / 4.5)


def test_words_and_tokens_per_word() -> None:
    assert count_words("  a plot\tthat\nworks ") == 4
    assert count_words("!!!") == 1 and count_words("") == 0
    assert tokens_per_word([6, 3], [4, 0]) == pytest.approx([1.5, 3.0])


# -- the window ------------------------------------------------------------------------------------------------------
def test_the_window_keeps_exactly_the_last_n_oldest_first() -> None:
    window = DriftWindow(5)
    for i in range(3):
        window.observe(i, i / 10, i + 1, i + 2)
    partial = window.snapshot()
    assert partial.labels.tolist() == [0, 1, 2] and not partial.is_full
    for i in range(3, 12):
        window.observe(i, i / 10, i + 1, i + 2)
    snap = window.snapshot()
    assert snap.seen == 12 and snap.is_full
    assert snap.labels.tolist() == [7, 8, 9, 10, 11]
    assert snap.confidence.tolist() == pytest.approx([0.7, 0.8, 0.9, 1.0, 1.1])
    assert snap.input_tokens.tolist() == [8, 9, 10, 11, 12]
    assert snap.words.tolist() == [9, 10, 11, 12, 13]


def test_an_append_waits_while_a_snapshot_holds_the_window() -> None:
    # Under the GIL a torn row is hard to provoke, so check the exclusion itself: observe takes the snapshot's lock.
    window, written = DriftWindow(4), threading.Event()

    def append() -> None:
        window.observe(1, 0.9, 3, 2)
        written.set()

    writer = threading.Thread(target=append)
    with window._lock:
        writer.start()
        assert not written.wait(0.2), "observe wrote while the window was being copied"
    assert written.wait(10)
    writer.join()
    assert window.snapshot().labels.tolist() == [1]


# -- the report on synthetic answers ---------------------------------------------------------------------------------
def answers(
    rng: np.random.Generator,
    n: int,
    *,
    label_mix: tuple[float, float] = (0.55, 0.45),
    confidence_beta: tuple[float, float] = (6.0, 2.0),
    words_range: tuple[int, int] = (3, 40),
    tokens_per_word: float = 1.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, confidences, input tokens and words of n answered texts of a two-label classifier."""
    labels = rng.choice(2, size=n, p=label_mix)
    confidence = 0.5 + 0.5 * rng.beta(*confidence_beta, size=n)
    words = rng.integers(*words_range, size=n)
    tokens = np.minimum(np.round(words * tokens_per_word + rng.integers(0, 4, size=n)) + 2, 128).astype(np.int64)
    return labels, confidence, tokens, words


def reference_from(rng: np.random.Generator, texts: int = REFERENCE_TEXTS) -> DriftReference:
    labels, confidence, tokens, words = answers(rng, texts)
    data = ReferenceData(
        logits=np.eye(2)[labels],  # answers whose argmax is the drawn label
        labels=labels,
        input_tokens=tokens,
        words=words,
        truncated=tokens >= 128,
        window=WINDOW,
        level=DEFAULT_LEVEL,
        critical_values=critical_values(WINDOW, texts, 2),
    )
    return DriftReference.prepare(data, confidence)


def window_from(rng: np.random.Generator, n: int = WINDOW, **shift: object) -> WindowSnapshot:
    labels, confidence, tokens, words = answers(rng, n, **shift)  # type: ignore[arg-type]
    return WindowSnapshot(WINDOW, n, labels, confidence, tokens, words)


def test_a_window_like_the_reference_raises_no_alarm() -> None:
    rng = np.random.default_rng(37)
    report = evaluate(window_from(rng), reference_from(rng))
    assert not report.alarm
    assert all(s.score is not None and s.score < 1 for s in report.signals.values())
    assert report.estimated_accuracy == pytest.approx(report.reference_estimated_accuracy, abs=0.01)


@pytest.mark.parametrize(
    ("signal", "shift"),
    [
        ("label_mix", {"label_mix": (0.7, 0.3)}),
        ("confidence", {"confidence_beta": (3.0, 2.0)}),
        ("input_tokens", {"words_range": (10, 60)}),
        ("tokens_per_word", {"tokens_per_word": 2.0, "words_range": (2, 27)}),
    ],
)
def test_a_shifted_window_raises_its_signal(signal: str, shift: dict[str, object]) -> None:
    rng = np.random.default_rng(37)
    report = evaluate(window_from(rng, **shift), reference_from(rng))  # type: ignore[arg-type]
    assert report.alarm
    score = report.signals[signal].score
    assert score is not None and score > 1, report.as_dict()


def test_the_alarm_stays_off_until_the_window_is_full() -> None:
    rng = np.random.default_rng(5)
    now = [0.0]
    monitor = DriftMonitor(reference_from(rng), WINDOW, clock=lambda: now[0])
    shifted = zip(*answers(rng, WINDOW, label_mix=(0.9, 0.1)), strict=True)
    for _ in range(WINDOW - 1):
        monitor.observe(*next(shifted))
    early = monitor.report()
    assert not early.alarm and early.texts == WINDOW - 1
    assert all(s.score is None and s.statistic is not None for s in early.signals.values())
    monitor.observe(*next(shifted))
    now[0] += 1.0
    assert monitor.report().alarm


def test_an_empty_window_reports_no_statistics_and_serialises() -> None:
    rng = np.random.default_rng(1)
    report = DriftMonitor(reference_from(rng), WINDOW).report()
    assert report.texts == 0 and report.estimated_accuracy is None and not report.alarm
    shown = json.loads(json.dumps(report.as_dict()))
    assert set(shown["signals"]) == set(SIGNALS)
    assert shown["signals"]["label_mix"] == {
        "statistic": None,
        "critical_value": pytest.approx(report.signals["label_mix"].critical_value),
        "score": None,
    }


def test_the_report_is_reused_for_at_most_one_second() -> None:
    rng = np.random.default_rng(2)
    now = [100.0]
    monitor = DriftMonitor(reference_from(rng), WINDOW, clock=lambda: now[0])
    first = monitor.report()
    monitor.observe(0, 0.9, 12, 9)
    now[0] += 0.999
    assert monitor.report() is first
    now[0] += 0.001
    second = monitor.report()
    assert second is not first and second.texts == 1


def test_critical_values_for_another_window_are_refused() -> None:
    rng = np.random.default_rng(3)
    reference = reference_from(rng)
    with pytest.raises(ConfigError, match=r"serve\.monitor_window is 500.*1000"):
        DriftMonitor(reference, 500)
    with pytest.raises(ValueError, match="critical values are for 1000"):
        evaluate(DriftWindow(500), reference)


def test_the_false_alarm_rate_over_independent_draws_is_within_the_level() -> None:
    # The trial: a reference and a window drawn independently from one distribution, many times.
    rng = np.random.default_rng(2026)
    trials = 500  # the issue asks for 1,000 offline; half keeps the fast tier fast at the same bound
    alarms = sum(evaluate(window_from(rng), reference_from(rng)).alarm for _ in range(trials))
    assert alarms / trials <= 0.07


def test_label_mix_false_alarm_rate_holds_its_share_of_the_level() -> None:
    # Without the (1 + N/M) factor the reference's own sampling noise makes this rate several times α/4.
    rng = np.random.default_rng(11)
    trials, share = 4000, DEFAULT_LEVEL / len(SIGNALS)
    critical = critical_values(WINDOW, REFERENCE_TEXTS, 3)["label_mix"]
    p = np.array([0.5, 0.3, 0.2])
    fired = 0
    for _ in range(trials):
        mix = reference_label_mix(rng.choice(3, size=REFERENCE_TEXTS, p=p), 3)
        fired += chi_square_statistic(rng.multinomial(WINDOW, p), mix * WINDOW) > critical
    assert fired / trials <= share + 4 * np.sqrt(share * (1 - share) / trials)


def test_ks_false_alarm_rate_on_continuous_values_is_near_its_share_of_the_level() -> None:
    rng = np.random.default_rng(12)
    trials, share = 2000, DEFAULT_LEVEL / len(SIGNALS)
    critical = critical_values(WINDOW, REFERENCE_TEXTS, 2)["confidence"]
    fired = sum(ks_statistic(rng.random(WINDOW), rng.random(REFERENCE_TEXTS)) > critical for _ in range(trials))
    margin = 4 * np.sqrt(share * (1 - share) / trials)
    assert share - margin <= fired / trials <= share + margin


def test_critical_values_shrink_with_larger_samples_and_refuse_bad_inputs() -> None:
    small, large = critical_values(100, REFERENCE_TEXTS, 2), critical_values(WINDOW, REFERENCE_TEXTS, 2)
    assert large["confidence"] < small["confidence"]
    assert large["confidence"] == large["input_tokens"] == large["tokens_per_word"]
    assert large["label_mix"] == pytest.approx((1 + WINDOW / REFERENCE_TEXTS) * stats.chi2.isf(0.0125, 1))
    with pytest.raises(ExportError, match="two labels"):
        critical_values(WINDOW, REFERENCE_TEXTS, 1)
    with pytest.raises(ExportError, match="level"):
        critical_values(WINDOW, REFERENCE_TEXTS, 2, level=1.5)


# -- reference.npz ---------------------------------------------------------------------------------------------------
@pytest.fixture
def reference_data() -> Iterator[ReferenceData]:
    rng = np.random.default_rng(4)
    _, _, tokens, words = answers(rng, 60)
    yield build_reference(rng.normal(size=(60, 3)), tokens, words, tokens >= 50, window=WINDOW)


def test_the_reference_file_round_trips(tmp_path: Path, reference_data: ReferenceData) -> None:
    path = tmp_path / "reference.npz"
    record = write_reference(path, reference_data)
    back = read_reference(path, expected_sha256=record.sha256)
    for name in ("logits", "labels", "input_tokens", "words", "truncated"):
        np.testing.assert_array_equal(getattr(back, name), getattr(reference_data, name))
    assert back.critical_values == pytest.approx(reference_data.critical_values)
    assert (back.window, back.level, back.texts, back.num_labels) == (WINDOW, DEFAULT_LEVEL, 60, 3)
    assert DriftReferenceRecord.model_validate_json(record.model_dump_json()) == record
    assert (record.texts, record.bytes) == (60, path.stat().st_size)
    assert not list(tmp_path.glob(".*.tmp")), "the atomic write left its temporary file"
    # What the service does with it: score the logits as it serves them, then watch a window against them.
    confidences = calibrated_probabilities(back.logits, 1.5, multi_label=False).max(axis=1)
    monitor = DriftMonitor(DriftReference.prepare(back, confidences), WINDOW)
    assert monitor.report().reference_estimated_accuracy == pytest.approx(confidences.mean())
    with pytest.raises(ValueError, match="60 texts but confidences"):
        DriftReference.prepare(back, confidences[:10])


def test_the_export_writer_returns_the_manifest_record(tmp_path: Path) -> None:
    logits = np.array([[2.0, -1.0], [0.0, 1.0], [0.5, 0.4]])
    record = write_drift_reference(
        tmp_path / "r.npz", logits, [5, 9, 130], [3, 6, 90], [False, False, True], window=100
    )
    assert record.file == "r.npz" and record.window == 100
    assert read_reference(tmp_path / "r.npz").labels.tolist() == [0, 1, 0]
    with pytest.raises(ExportError, match="words: 2 rows"):
        build_reference(logits, [5, 9, 130], [3, 6], [False] * 3, window=100)


def test_a_missing_or_changed_reference_file_is_refused(tmp_path: Path, reference_data: ReferenceData) -> None:
    with pytest.raises(ArtifactError, match="missing"):
        read_reference(tmp_path / "reference.npz")
    path = tmp_path / "reference.npz"
    write_reference(path, reference_data)
    with pytest.raises(ArtifactError, match="sha256 differs"):
        read_reference(path, expected_sha256="0" * 64)


@pytest.mark.parametrize("damage", ["garbage", "cut", "npy"])
def test_a_corrupt_reference_file_is_refused(tmp_path: Path, reference_data: ReferenceData, damage: str) -> None:
    path = tmp_path / "reference.npz"
    write_reference(path, reference_data)
    if damage == "garbage":
        path.write_bytes(b"not an npz at all" * 10)
    elif damage == "cut":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        np.save(path.with_suffix(".npy"), reference_data.logits)
        path.with_suffix(".npy").replace(path)
    with pytest.raises(ArtifactError, match=r"not a readable \.npz"):
        read_reference(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "words"}, r"missing arrays \['words'\]"),
        ({"labels": np.zeros(60, dtype=np.int64)}, "argmax"),
        ({"format_version": np.int64(99)}, "format_version 99"),
        ({"critical_values": np.array([1.0, 1.0, 1.0])}, "4 signals but 3"),
        ({"input_tokens": np.zeros(60, dtype=np.int64)}, "input_tokens must be"),
        ({"logits": np.full((60, 3), np.nan, dtype=np.float32)}, "not all finite"),
    ],
)
def test_a_malformed_reference_names_the_array(
    tmp_path: Path, reference_data: ReferenceData, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "reference.npz"
    write_reference(path, reference_data)
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays.pop(str(change.pop("drop", "")), None)
    arrays.update(change)
    np.savez(path, **arrays)
    with pytest.raises(ArtifactError, match=message):
        read_reference(path)
