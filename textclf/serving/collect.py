"""Each answered text's features and prediction through BentoML's data collection (`bentoml.monitor`), queued on the
request path and written once a second by the monitoring thread (`textclf.serving.monitoring`, which says why)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Final

MONITOR_NAME: Final = "textclf"  # bentoml.monitor's name: BentoML's log files go to <log_path>/textclf/data/
# The columns of BentoML's records: name → (BentoML's role, BentoML's type). A record holds one second's answered
# texts: each column is a list with one entry per text, in the order they were answered. `textclf monitor` reads them.
COLUMNS: Final = {
    "answered_at": ("feature", "numerical_sequence"),  # seconds since the epoch when the answer left the pipeline
    "label": ("prediction", "categorical"),
    "confidence": ("prediction", "numerical_sequence"),  # the top label's served (calibrated) probability
    "abstained": ("prediction", "categorical"),  # null where no selective threshold is in force
    "input_tokens": ("feature", "numerical_sequence"),
    "words": ("feature", "numerical_sequence"),
    "truncated": ("feature", "categorical"),
}
TEXT_COLUMN: Final = "text"  # collected only with serve.monitor_texts
MAX_QUEUED_TEXTS: Final = 100_000  # rows waiting for the writer; past it the oldest go (a stalled log must not grow)


def _bentoml_monitor(name: str) -> AbstractContextManager[Any]:
    import bentoml

    monitor: AbstractContextManager[Any] = bentoml.monitor(name)
    return monitor


Row = tuple[float, str, float, bool | None, int | None, int, bool, str | None]  # a text's COLUMNS values, its text


class DataCollector:
    """Each answered text's features and prediction through BentoML's monitoring API (`bentoml.monitor`): JSON lines
    in BentoML's default log files (`<log_path>/textclf/data/data.<worker>.log`), or OTLP, or nothing, as BentoML's
    own `monitoring` config says. The text itself only with `serve.monitor_texts`.

    `add` queues a text (the request path); `flush` writes the queued ones as one record (the monitoring thread)."""

    def __init__(
        self,
        *,
        with_texts: bool = False,
        name: str = MONITOR_NAME,
        open_monitor: Callable[[str], AbstractContextManager[Any]] = _bentoml_monitor,
        max_queued_texts: int = MAX_QUEUED_TEXTS,
    ) -> None:
        self.with_texts = with_texts
        self.name = name
        self.open_monitor = open_monitor
        self._queued: deque[Row] = deque(maxlen=max_queued_texts)  # appends and pops from two threads, lock-free
        self.dropped = 0  # texts the full queue let go

    def add(self, row: Row) -> None:
        """Queue one answered text (its text only with `with_texts`; keep None otherwise)."""
        if len(self._queued) == self._queued.maxlen:
            self.dropped += 1
        self._queued.append(row)

    def flush(self) -> int:
        """Write every queued text as one record, each column a list; returns how many."""
        rows = []
        while self._queued:
            rows.append(self._queued.popleft())
        if not rows:
            return 0
        columns = list(zip(*rows, strict=True))
        with self.open_monitor(self.name) as monitor:
            for (name, (role, kind)), values in zip(COLUMNS.items(), columns, strict=False):
                monitor.log(list(values), name, role, kind)
            if self.with_texts:
                monitor.log(list(columns[-1]), TEXT_COLUMN, "feature", "categorical")
        return len(rows)
