"""A generated multi-label data set: short news-like texts tagged with any subset of three topics.

Offline and seeded, so the multi-label example in docs/data.md and the tests train on the same kind of data without a
hub.
Each topic is told by its own cue words; a text may carry none, one or several topics. Some texts also mention a
topic's word in passing without being tagged with it, so no model gets every label set right.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from textclf.artifacts.files import atomic_write_text

TOPIC_CUES: dict[str, tuple[str, ...]] = {
    "sports": ("match", "goal", "coach", "league", "striker", "season", "stadium", "referee"),
    "politics": ("election", "senate", "minister", "vote", "policy", "parliament", "campaign", "treaty"),
    "science": ("laboratory", "physics", "genome", "telescope", "experiment", "vaccine", "climate", "quantum"),
}
FILLER = (
    "the", "a", "new", "report", "says", "after", "week", "city", "local", "officials", "today", "news", "story",
    "people", "many", "said", "on", "in", "and", "with", "about", "latest", "update", "team", "plan",
)  # fmt: skip


def multi_label_rows(
    n: int, seed: int = 0, topic_rate: float = 0.4, passing_mention_rate: float = 0.1
) -> list[dict[str, object]]:
    """`n` rows of {"text", "labels"}: each topic is on a text with probability `topic_rate` (so some have none);
    an untagged topic's cue word appears anyway with probability `passing_mention_rate`."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for _ in range(n):
        labels = sorted(topic for topic in TOPIC_CUES if rng.random() < topic_rate)
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 16))]
        for topic, cues in TOPIC_CUES.items():
            mentions = rng.randint(1, 2) if topic in labels else int(rng.random() < passing_mention_rate)
            for _ in range(mentions):
                words.insert(rng.randrange(len(words) + 1), rng.choice(cues))
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def write_multi_label_jsonl(path: Path, n: int = 2000, seed: int = 0) -> Path:
    """Write `multi_label_rows` as JSON lines (atomically); train it with data.multi_label=true, label_column=labels."""
    lines = "".join(json.dumps(row) + "\n" for row in multi_label_rows(n, seed))
    atomic_write_text(path, lines)
    return path
