"""The one inference path: Rust tokenizer → dynamic padding → onnxruntime session → the variant's fitted
temperature → softmax (multi-label: sigmoid and a threshold) → labels, and whether each answer abstains. Texts past
max_seq_len tokens are cut, refused, or read in windows whose logits are aggregated per text
(`textclf.inference.windows`).

Used by the service, the export gates and the benchmarks alike. Imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from textclf.artifacts.confidence import ConfidenceRecord
from textclf.artifacts.manifest import require_export, verify_files
from textclf.artifacts.records import FileEntry
from textclf.artifacts.schema import ExportSection
from textclf.errors import ArtifactError, RequestError
from textclf.hardware import usable_cores
from textclf.inference.batches import Batch, length_order, pad_encodings
from textclf.inference.confidence import ServedConfidence
from textclf.inference.engines import MODEL_FILES, Engine, OrtEngine, RoutedEngine
from textclf.inference.folders import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    engine_of,
    identity_sha256,
    load_engine,
    passed_variant,
    read_sidecar,
    shipped_variants,
)
from textclf.inference.predictions import Prediction, calibrated_probabilities, multi_label_threshold, predictions
from textclf.inference.streams import EngineStreams
from textclf.inference.text_options import DEFAULT_OPTIONS, OVERLENGTH_POLICIES, OverlengthPolicy, TextOptions
from textclf.inference.windows import AGGREGATIONS, AggregationSetting, Windows, aggregation_for, window_overlap
from textclf.paths import ONNX_DIR

logger = logging.getLogger(__name__)


class OverlengthError(RequestError):
    """A text is longer than max_seq_len tokens and the config asks for an error instead of truncation."""

    def __init__(self, message: str) -> None:
        super().__init__("text_too_long", message)


def default_intra_op_threads(workers: int = 1) -> int:
    """Cores divided by worker processes: one ORT pool per process, never oversubscribed."""
    return max(1, usable_cores() // max(1, workers))


class Classifier:
    """A loaded ONNX variant folder (model.onnx, tokenizer.json, config.json, textclf.json)."""

    def __init__(
        self,
        variant_dir: Path,
        *,
        expected_files: Mapping[str, FileEntry] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int = 1,
        use_cuda: bool = False,
        max_seq_len: int | None = None,
        on_overlength: str = "truncate",
        allow_spinning: bool = True,
        chunk_overlap_tokens: int = 32,
        chunk_aggregation: AggregationSetting = "auto",
        streams: int = 1,
        confidence: ConfidenceRecord | None = None,
        min_confidence: float | None = None,
        target_accuracy: float | None = None,
    ) -> None:
        """Load a variant, verifying its files first when `expected_files` (from the manifest) is given.

        `streams` copies of the engine share `intra_op_threads` (at least one thread each) and run the calls of one
        `infer_encoded` side by side (`textclf.inference.streams`: the bulk paths' throughput mode); the service keeps
        one.

        `on_overlength` is the policy for texts over max_seq_len tokens when a call names none; `chunk_overlap_tokens`
        and `chunk_aggregation` shape the windows of the `chunk` policy (`serve.chunk_*`).

        `confidence` is the variant's record (`from_run` reads it from the manifest; None: raw scores): its temperature
        (and multi-label per-label thresholds) applies to every prediction. `min_confidence` or `target_accuracy`
        (`serve.*`, at most one) set the `selective_threshold` under which an answer is marked `abstained`.

        Raises:
            ArtifactError: a file is missing or differs from its recorded sha256, or the confidence record does not
                fit the model.
            ConfigError: selective settings that are refused (`textclf.inference.confidence.resolve_threshold`: both
                set, a multi-label model, a target the validation curve does not reach).
        """
        from tokenizers import Tokenizer

        self.variant_dir = Path(variant_dir)
        self.files = dict(expected_files) if expected_files is not None else None
        if self.files is not None:
            verify_files(self.variant_dir, self.files)
        sidecar = read_sidecar(self.variant_dir)
        engine_name = engine_of(sidecar)
        model_file = MODEL_FILES[engine_name]
        self.model_sha256 = identity_sha256(self.files or {}, engine_name)
        for name in (model_file, TOKENIZER_FILE, CONFIG_FILE):
            if not (self.variant_dir / name).is_file():
                raise ArtifactError(f"{self.variant_dir / name}: missing; not an exported variant folder")
        config = json.loads((self.variant_dir / CONFIG_FILE).read_text())
        id2label = config.get("id2label") or {}
        self.labels = [id2label.get(str(i), id2label.get(i, f"LABEL_{i}")) for i in range(len(id2label))]
        if not self.labels:
            raise ArtifactError(f"{self.variant_dir / CONFIG_FILE}: no id2label; cannot name the classes")
        self.threshold = multi_label_threshold(config)
        self.multi_label = self.threshold is not None
        self.variant = sidecar.get("variant", self.variant_dir.name)
        self.max_seq_len = int(max_seq_len or sidecar.get("max_seq_len") or config.get("max_position_embeddings", 512))
        if on_overlength not in OVERLENGTH_POLICIES:
            raise ValueError(f"on_overlength must be one of {OVERLENGTH_POLICIES}, got {on_overlength!r}")
        if chunk_aggregation not in AGGREGATIONS:
            raise ValueError(f"chunk_aggregation must be one of {AGGREGATIONS}, got {chunk_aggregation!r}")
        self.on_overlength = cast(OverlengthPolicy, on_overlength)  # checked just above
        self.chunk_aggregation = aggregation_for(chunk_aggregation, self.multi_label)
        self.confidence = confidence
        served = ServedConfidence.load(
            confidence, self.labels, self.multi_label, min_confidence, target_accuracy, self.variant
        )
        self.temperature, self.label_thresholds = served.temperature, served.label_thresholds
        self.selective_threshold = served.selective

        self.tokenizer = Tokenizer.from_file(str(self.variant_dir / TOKENIZER_FILE))
        self.tokenizer.no_padding()  # padding is done per batch, to the batch's own longest text
        self.tokenizer.enable_truncation(max_length=self.max_seq_len)
        # The same tokenizer cutting from the left (a request's `truncation_direction: left`): its own copy, since
        # a tokenizer's truncation is its state and the one above is used from several threads.
        self.left_tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        self.left_tokenizer.enable_truncation(max_length=self.max_seq_len, direction="left")
        # And a third for `chunk`: the same cut, with every overflowing window kept `stride` tokens into the one
        # before. Its own copy too: the stride is truncation state, and the truncate path must not pay for windows.
        window_text = self.max_seq_len - self.tokenizer.num_special_tokens_to_add(is_pair=False)
        self.chunk_overlap_tokens = window_overlap(chunk_overlap_tokens, window_text)
        self.chunk_tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        self.chunk_tokenizer.enable_truncation(max_length=self.max_seq_len, stride=self.chunk_overlap_tokens)
        self.pad_id = int(config.get("pad_token_id") or 0)

        self.intra_op_threads = intra_op_threads or default_intra_op_threads()
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        self.engines: list[Engine] = [
            load_engine(
                self.variant_dir,
                sidecar,
                threads=max(1, self.intra_op_threads // streams),
                inter_op_threads=inter_op_threads,
                use_cuda=use_cuda,
                allow_spinning=allow_spinning,
                pad_id=self.pad_id,
            )
            for _ in range(streams)
        ]
        self.engine: Engine = self.engines[0]
        self.input_names = self.engine.input_names
        self._streams: EngineStreams | None = None  # the copies' pool, built by the first call that runs on it
        logger.info(
            "loaded %s (%s, %d labels, max_seq_len %d, %s)",
            self.variant_dir,
            self.variant,
            len(self.labels),
            self.max_seq_len,
            self.engine.describe(),
        )

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime's execution providers, or the OpenVINO device, of the serving variant's engine."""
        engine = self.engine.parts()[0]
        return list(engine.providers) if isinstance(engine, OrtEngine) else ["OpenVINO CPU"]

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (benchmarks bind CUDA inputs to it); an error for an OpenVINO variant."""
        if not isinstance(self.engine, OrtEngine):
            raise ArtifactError(f"{self.variant_dir}: not an ONNX Runtime variant ({self.engine.describe()})")
        return self.engine.session

    def route_long_calls(self, long: Classifier, max_short_tokens_per_text: int) -> None:
        """Run calls whose texts are padded past `max_short_tokens_per_text` tokens on `long`'s engine (the same
        model, another variant), every other call on this one's (`RoutedEngine`)."""
        if long.labels != self.labels or long.max_seq_len != self.max_seq_len:
            raise ArtifactError(f"{long.variant_dir} is not the same model as {self.variant_dir}; cannot route to it")
        if len(long.engines) != len(self.engines):
            raise ArtifactError(f"{long.variant_dir} runs {len(long.engines)} streams, not {len(self.engines)}")
        self.engines = [
            RoutedEngine(short, other, max_short_tokens_per_text)
            for short, other in zip(self.engines, long.engines, strict=True)
        ]
        self.engine = self.engines[0]
        if self._streams is not None:  # a pool of the engines before: the next call builds one of the routed pairs
            self._streams.close()
            self._streams = None
        logger.info("routing: %s", self.engine.describe())

    @classmethod
    def from_run(cls, run_dir: Path, variant: str | None = None, *, route: bool = True, **kwargs: Any) -> Classifier:
        """Load the manifest's serving variant, or `variant` (alone), of a run folder, verified against its sha256s.

        The serving variant comes with export's long route where it recorded one (`route=False` leaves it out):
        calls whose texts are padded past the route's threshold run on the route variant's engine. `variant` may
        name any passing variant whose folder is here (a Bento holds those `textclf build` shipped).

        Raises:
            ArtifactError: no serving variant, or `variant` is not shipped here (the message names those that are),
                or a file differs from its recorded sha256.
        """
        run_dir = Path(run_dir)
        export = require_export(run_dir)
        if export.ignored_route is not None:
            logger.warning(
                "%s was exported by an older textclf: its long-call route (to %s) is ignored; re-export to route "
                "long texts",
                run_dir,
                export.ignored_route,
            )
        name = variant or export.serving_variant
        if not name:
            raise ArtifactError(f"{run_dir}: the export chose no serving variant (none passed its gates)")
        shipped = shipped_variants(run_dir, export)
        if variant is not None and variant not in shipped:
            record = export.variants.get(variant)
            why = f"was refused at export: {record.reason}" if record and not record.passed else "is not shipped here"
            raise ArtifactError(f"{run_dir}: variant {variant!r} {why} (it ships: {', '.join(shipped) or 'none'})")
        classifier = cls._load_variant(run_dir, export, name, **kwargs)
        plan = export.long_route
        if variant is None and route and plan is not None:
            # The serving variant's confidence scores every answer; the long variant only lends its engine.
            kwargs |= {"min_confidence": None, "target_accuracy": None}
            long = cls._load_variant(run_dir, export, plan.variant, **kwargs)
            classifier.route_long_calls(long, plan.max_short_tokens_per_text)
        return classifier

    @classmethod
    def _load_variant(cls, run_dir: Path, export: ExportSection, name: str, **kwargs: Any) -> Classifier:
        record = passed_variant(run_dir, export, name)
        return cls(run_dir / ONNX_DIR / name, expected_files=record.files, confidence=record.confidence, **kwargs)

    # -- tokenization ---------------------------------------------------------------------------------------
    def policy(self, options: TextOptions) -> OverlengthPolicy:
        """What happens to a text over max_seq_len tokens: the call's choice, else the classifier's."""
        return options.on_overlength or self.on_overlength

    def encode(self, texts: list[str], options: TextOptions = DEFAULT_OPTIONS) -> list[Any]:
        """Tokenize, cutting at max_seq_len tokens from the end `options` names; raises OverlengthError when the
        request's policy (or, where it names none, the classifier's `on_overlength`) is `error`. Under `chunk` each
        encoding is a text's first window, its `overflowing` the others (`windows` lists them all)."""
        policy = self.policy(options)
        if policy == "chunk":
            return list(self.chunk_tokenizer.encode_batch(texts))
        left = options.truncation_direction == "left"
        encodings = (self.left_tokenizer if left else self.tokenizer).encode_batch(texts)
        if policy == "error":
            for index, encoding in enumerate(encodings):
                if encoding.overflowing:
                    raise OverlengthError(f"texts[{index}] is longer than max_seq_len={self.max_seq_len} tokens")
        return list(encodings)

    def windows(self, encodings: list[Any], options: TextOptions = DEFAULT_OPTIONS) -> Windows[Any] | None:
        """Under the `chunk` policy, every window of `encode`'s encodings (what the engine runs) and how their
        logits become each text's; otherwise None (one engine input per text, nothing to aggregate)."""
        if self.policy(options) != "chunk":
            return None
        return Windows.of(encodings, self.chunk_aggregation)

    def pad(self, encodings: list[Any]) -> Batch:
        """Pad encodings, in the order given, to the longest of them."""
        return pad_encodings(encodings, self.pad_id, self.input_names)

    # -- inference ------------------------------------------------------------------------------------------
    def run_session(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The engine alone: padded inputs in, float32 logits out."""
        return self.engine.run(inputs)

    def token_count(self, encoding: Any) -> int:
        """Real (non-padding) tokens of one encoded text, after truncation."""
        return len(encoding.ids)

    def infer_encoded(
        self,
        encodings: list[Any],
        batch_size: int | None = None,
        on_call: Callable[[list[int]], None] | None = None,
    ) -> tuple[np.ndarray, list[bool]]:
        """Logits for already-tokenized texts, in the order given, and their truncation flags.

        Texts are sorted by token length so each ONNX call pads only to its own longest text; the sorted texts
        are cut into calls of at most `batch_size` texts (default: all at once). With engine copies, every call is
        handed to them at once: a copy that finishes early takes the next call, never waiting for the other.
        `on_call` hears of each finished call (the positions of its texts in `encodings`), in the calls' order.
        """
        logits = np.empty((len(encodings), len(self.labels)), dtype=np.float32)
        truncated = [False] * len(encodings)
        if not encodings:
            return logits, truncated
        order = length_order([self.token_count(encoding) for encoding in encodings])
        step = batch_size or len(encodings)
        calls = [order[start : start + step] for start in range(0, len(order), step)]
        if len(self.engines) > 1 and len(calls) > 1:
            if self._streams is None:
                self._streams = EngineStreams(self.engines, self._warm_inputs())

            def run_call(engine: Engine, call: list[int]) -> tuple[Batch, np.ndarray]:
                batch = self.pad([encodings[i] for i in call])
                return batch, engine.run(batch.inputs)

            done: Iterable[tuple[Batch, np.ndarray]] = self._streams.map(run_call, calls)
        else:
            done = (
                (batch, self.run_session(batch.inputs))
                for batch in (self.pad([encodings[i] for i in c]) for c in calls)
            )
        for call, (batch, call_logits) in zip(calls, done, strict=True):
            logits[call] = call_logits
            for i, flag in zip(call, batch.truncated, strict=True):
                truncated[i] = flag
            if on_call is not None:
                on_call(call)
        return logits, truncated

    def _warm_inputs(self) -> dict[str, np.ndarray]:
        """One short text's model inputs: the call each stream runs once as it starts."""
        return self.pad(self.encode(["warm up"])).inputs

    @property
    def stream_count(self) -> int:
        """Engine copies that run one `infer_encoded`'s calls side by side."""
        return len(self.engines)

    def logits(self, texts: list[str], batch_size: int | None = None) -> tuple[np.ndarray, list[bool]]:
        """Logits in input order, and per-text truncation flags (see `infer_encoded` for the batching)."""
        return self.infer_encoded(self.encode(texts) if texts else [], batch_size)

    def document_logits(
        self, texts: list[str], batch_size: int | None = None, options: TextOptions = DEFAULT_OPTIONS
    ) -> tuple[np.ndarray, list[bool], list[int] | None]:
        """Logits per text as `options` ask (under `chunk`: its windows' aggregate), truncation flags, and under
        `chunk` the windows each text took (else None). Windows are batched like texts (`infer_encoded`)."""
        encodings = self.encode(texts, options) if texts else []
        windows = self.windows(encodings, options)
        if windows is None:
            logits, truncated = self.infer_encoded(encodings, batch_size)
            return logits, truncated, None
        window_logits, _ = self.infer_encoded(windows.units, batch_size)
        return windows.aggregate(window_logits), [False] * len(texts), windows.counts

    def predict(
        self, texts: list[str], batch_size: int | None = None, options: TextOptions = DEFAULT_OPTIONS
    ) -> list[Prediction]:
        """Label, score and every class's probability for each text, in input order (+ `chunks` under `chunk`)."""
        logits, truncated, chunks = self.document_logits(texts, batch_size, options)
        return self.predictions(logits, truncated, chunks=chunks)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The served probabilities: softmax over the classes (multi-label: each label's own sigmoid) of the logits
        scaled by the variant's fitted temperature."""
        return calibrated_probabilities(logits, self.temperature, self.multi_label)

    def predictions(
        self,
        logits: np.ndarray,
        truncated: list[bool],
        *,
        top_k: int | None = None,
        raw_scores: bool = False,
        chunks: list[int] | None = None,
        min_confidence: float | None = None,
    ) -> list[Prediction]:
        """Each row's best label and its classes' calibrated scores, named by the model's labels (multi-label: its
        label set, at the per-label thresholds where export fitted them), and `abstained` where a threshold is in
        force.

        Args:
            top_k: keep only the k best classes in `scores` (best first); None keeps every class in label order.
            raw_scores: scores are the raw logits themselves instead of probabilities (the label set is unchanged).
            chunks: the windows each row's text took (`chunk` policy), carried into each prediction.
            min_confidence: this call's threshold (a request's own, checked by
                `textclf.inference.confidence.request_threshold`); None: the `selective_threshold`, if any.
        """
        if min_confidence is None and self.selective_threshold is not None:
            min_confidence = self.selective_threshold.threshold
        cut = self.label_thresholds if self.label_thresholds is not None else self.threshold
        options: dict[str, Any] = {"top_k": top_k, "raw_scores": raw_scores, "chunks": chunks}
        return predictions(
            logits, truncated, self.labels, cut, temperature=self.temperature, **options, min_confidence=min_confidence
        )
