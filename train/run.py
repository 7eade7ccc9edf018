"""`textclf train`: fine-tune the base checkpoint with the Hugging Face Trainer and record the run."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from textclf.artifacts.files import atomic_dir, now_iso
from textclf.artifacts.manifest import file_entries, folder_digest, update_manifest
from textclf.artifacts.schema import (
    DataRecord,
    EpochMetrics,
    FolderRecord,
    SplitMetrics,
    SplitRecord,
    TrainerRecord,
    TrainHardware,
    TrainMetrics,
    TrainSection,
)
from textclf.config import Config
from textclf.paths import CHECKPOINT_DIR, CONFUSION_MATRIX_PNG, TRAINER_STATE_DIR
from textclf_train.data import LABEL, SPLITS, TEXT, LabelledData, load_labelled_data
from textclf_train.metrics import (
    full_metrics,
    multi_label_metrics,
    multi_label_trainer_metrics,
    plot_confusion_matrix,
    trainer_metrics,
)
from textclf_train.model import resolve_base_model
from textclf_train.tracking import TrainTracking

logger = logging.getLogger(__name__)


def _world() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them; (0, 1) for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _training_arguments(
    cfg: Config, output_dir: Path, world_size: int, use_cuda: bool, tracking: dict[str, Any]
) -> Any:
    from transformers import TrainingArguments

    tc = cfg.train
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=tc.epochs,
        # The configured batch is the global one: torchrun splits it across processes.
        per_device_train_batch_size=max(1, tc.batch_size // world_size),
        per_device_eval_batch_size=tc.eval_batch_size,
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        warmup_ratio=tc.warmup_ratio,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=tc.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        logging_steps=tc.logging_steps,
        seed=tc.seed,
        data_seed=tc.seed,
        use_cpu=not use_cuda,
        ddp_backend=None if use_cuda or world_size == 1 else "gloo",
        dataloader_num_workers=0,
        # Batches of similar lengths waste little compute on padding: the biggest speed-up on a CPU.
        group_by_length=tc.group_by_length,
        save_safetensors=True,
        disable_tqdm=False,
        **tracking,  # report_to, run_name (textclf's run), logging_dir (TensorBoard's event folder)
    )


def _tokenize(data: LabelledData, tokenizer: Any, max_seq_len: int) -> Any:
    num_labels = len(data.label_names)

    def encode(batch: dict[str, list[Any]]) -> Any:
        # No padding here: the collator pads each batch to its own longest text (dynamic padding).
        encoded = tokenizer(batch[TEXT], truncation=True, max_length=max_seq_len)
        if data.multi_label:
            # BCE-with-logits takes one float target per label: the label set as a multi-hot row.
            encoded["labels"] = [_multi_hot(ids, num_labels) for ids in batch[LABEL]]
        return encoded

    return data.splits.map(
        encode,
        batched=True,
        remove_columns=[TEXT, LABEL] if data.multi_label else [TEXT],
        keep_in_memory=True,  # several torchrun processes must not race on one cache file
        desc="tokenizing",
    )


def _multi_hot(ids: list[int], num_labels: int) -> list[float]:
    row = [0.0] * num_labels
    for i in ids:
        row[i] = 1.0
    return row


def _split_metrics(data: LabelledData, threshold: float, logits: np.ndarray, label_ids: np.ndarray) -> SplitMetrics:
    if data.multi_label:
        return SplitMetrics(**multi_label_metrics(label_ids, logits, threshold, data.label_names))
    return SplitMetrics(**full_metrics(label_ids, logits.argmax(axis=-1), data.label_names))


def _resume_point(output_dir: Path, resume: bool, rank: int) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not resume:
        if rank == 0 and output_dir.exists():
            shutil.rmtree(output_dir)  # a fresh run must not pick up another run's optimizer state
        return None
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if last is None:
        logger.warning("--resume: no interrupted run under %s; starting from the beginning", output_dir)
    else:
        logger.info("resuming from %s", last)
    return last


def _best_epoch(state: Any, resumed_from: str | None) -> TrainerRecord:
    # log_history is the Trainer's own list of dicts; only its evaluation entries are recorded.
    evals = [entry for entry in state.log_history if "eval_macro_f1" in entry]
    history = [
        EpochMetrics(epoch=e["epoch"], accuracy=e["eval_accuracy"], macro_f1=e["eval_macro_f1"], loss=e["eval_loss"])
        for e in evals
    ]
    return TrainerRecord(
        best_metric_macro_f1=state.best_metric,
        best_checkpoint_step=int(state.best_model_checkpoint.rsplit("-", 1)[-1])
        if state.best_model_checkpoint
        else None,
        epochs_run=state.epoch,
        global_steps=state.global_step,
        validation_history=history,
        resumed_from=resumed_from,
    )


def run(cfg: Config, run_dir: Path, *, resume: bool = False, callbacks: list[Any] | None = None) -> Path:
    """Fine-tune `cfg.train.base_model` on `cfg.data` and write `run_dir/checkpoint` plus the manifest.

    Data and model are validated before anything is written, and the trackers of `train.report_to` before
    that. The checkpoint folder appears only when complete, and the manifest's `train` section is written last, so
    a failed run never claims success.

    Args:
        cfg: the whole config; `data` and `train` are read.
        run_dir: `artifacts/<run>`.
        resume: continue from the last epoch checkpoint of an interrupted run.
        callbacks: extra `transformers.TrainerCallback`s (progress hooks, custom stopping).

    Returns:
        The checkpoint folder.

    Raises:
        ConfigError: a tracker of `train.report_to` cannot run here (its package is missing), before any work.
    """
    tracking = TrainTracking.prepare(cfg, run_dir, is_main=_world()[0] == 0)
    with tracking.closing():
        return _fine_tune(cfg, run_dir, tracking, resume=resume, callbacks=callbacks)


def _fine_tune(
    cfg: Config, run_dir: Path, tracking: TrainTracking, *, resume: bool, callbacks: list[Any] | None
) -> Path:
    started = time.perf_counter()
    data = load_labelled_data(cfg.data)
    base = resolve_base_model(cfg.train.base_model)

    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        set_seed,
    )

    rank, world_size = _world()
    use_cuda = torch.cuda.is_available()
    threads = cfg.train.num_threads or max(1, (os.cpu_count() or 1) // world_size)
    torch.set_num_threads(threads)
    set_seed(cfg.train.seed)

    tokenizer = AutoTokenizer.from_pretrained(base.load_from, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{base.load_from}: a fast (Rust) tokenizer is needed for the torch-free runtime")
    threshold = cfg.train.threshold
    problem_type = "multi_label_classification" if data.multi_label else "single_label_classification"
    model = AutoModelForSequenceClassification.from_pretrained(
        base.load_from,
        problem_type=problem_type,  # multi-label: transformers trains with BCE-with-logits
        num_labels=len(data.label_names),
        id2label=dict(enumerate(data.label_names)),
        label2id={name: i for i, name in enumerate(data.label_names)},
        ignore_mismatched_sizes=True,  # a base that already has a head of another size gets a new one
    )
    if data.multi_label:
        # Saved in config.json, so the exported variants and the runtime apply the threshold trained with.
        model.config.textclf_threshold = threshold
    if base.record.kind == "hub":
        base.record.revision = getattr(model.config, "_commit_hash", None)

    encoded = _tokenize(data, tokenizer, cfg.train.max_seq_len)
    output_dir = run_dir / TRAINER_STATE_DIR
    resume_from = _resume_point(output_dir, resume, rank)
    tracking.start()
    trainer = Trainer(
        model=model,
        args=_training_arguments(cfg, output_dir, world_size, use_cuda, tracking.trainer_arguments()),
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=multi_label_trainer_metrics(threshold) if data.multi_label else trainer_metrics,
        callbacks=[
            EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience),
            *(callbacks or []),
        ],
    )
    trainer.train(resume_from_checkpoint=resume_from)

    metrics = {}
    for split in ("validation", "test"):
        prediction = trainer.predict(encoded[split], metric_key_prefix=split)
        # label_ids, not the dataset's column: group_by_length also reorders evaluation batches.
        logits, label_ids = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
        metrics[split] = _split_metrics(data, threshold, logits, label_ids)

    checkpoint = run_dir / CHECKPOINT_DIR
    if not trainer.is_world_process_zero():
        return checkpoint
    with atomic_dir(checkpoint) as staging:
        trainer.model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
    test_metrics = metrics["test"]
    if test_metrics.confusion_matrix is not None:
        plot_confusion_matrix(
            test_metrics.confusion_matrix, data.label_names, run_dir / CONFUSION_MATRIX_PNG, "test split"
        )
    entries = file_entries(checkpoint)
    data_record = DataRecord(
        source=data.source,
        config=cfg.data.model_dump(mode="json"),  # what export needs to rebuild the same test split
        splits={name: SplitRecord(rows=data.splits[name].num_rows, sha256=data.split_sha256[name]) for name in SPLITS},
        dropped_empty_texts=data.dropped_empty_texts,
    )
    train_metrics = TrainMetrics(validation=metrics["validation"], test=test_metrics)
    plots = [run_dir / CONFUSION_MATRIX_PNG] if test_metrics.confusion_matrix is not None else []
    section = TrainSection(
        completed_at=now_iso(),
        wall_time_s=round(time.perf_counter() - started, 1),
        data=data_record,
        base_model=base.record,
        label_names=data.label_names,
        problem_type=problem_type,
        threshold=threshold if data.multi_label else None,
        max_seq_len=cfg.train.max_seq_len,
        checkpoint=FolderRecord(path=CHECKPOINT_DIR, sha256=folder_digest(entries), files=entries),
        confusion_matrix_png=CONFUSION_MATRIX_PNG if test_metrics.confusion_matrix is not None else None,
        metrics=train_metrics,
        trainer=_best_epoch(trainer.state, resume_from),
        hardware=TrainHardware(device="cuda" if use_cuda else "cpu", world_size=world_size, torch_threads=threads),
        tracking=tracking.finish(data=data_record, metrics=train_metrics, step=trainer.state.global_step, files=plots),
    )
    # A new checkpoint makes any earlier export stale, so its section goes.
    update_manifest(run_dir, section, config=cfg.to_dict(), drop_sections=("export",))
    shutil.rmtree(output_dir, ignore_errors=True)  # intermediate checkpoints were only needed for --resume
    return checkpoint
