"""The benchmarks' own config section (`bench`), typed here rather than in the core the Bento ships."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from textclf.config import Config, Section

# The Bento as configured (`serve.workers` × `serve.intra_op_threads`), the baseline and the peer's two engines.
LoadServer = Literal["bento", "baseline", "infinity-optimum", "infinity-torch"]
LOAD_SERVERS: tuple[LoadServer, ...] = get_args(LoadServer)
# The long-text phase: the configured Bento, the baseline and the peer's ONNX Runtime engine on the same model.onnx.
DEFAULT_LONG_SERVERS: tuple[LoadServer, ...] = ("bento", "baseline", "infinity-optimum")


class BenchConfig(Section):
    """Engine sweeps and HTTP load tests."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32])
    seq_lens: list[int] = Field(default_factory=lambda: [16, 64, 128, 256, 512])
    warmup_iters: int = Field(3, ge=0)
    min_iters: int = Field(10, ge=1)
    max_seconds_per_case: float = Field(2.0, gt=0)
    real_texts: int = Field(256, ge=1, description="test-split texts used for the real-length cases")
    use_torch_compile: bool = True
    load_users: list[int] = Field(
        default_factory=lambda: [1, 8, 32, 64], description="closed-loop users per phase; 1 user again follows"
    )
    load_seconds: int = Field(20, ge=1)
    load_warmup_seconds: int = Field(5, ge=0, description="one user, not recorded, before a server's phases")
    load_servers: list[LoadServer] = Field(default_factory=lambda: list(LOAD_SERVERS), description="in order")
    load_long_users: int = Field(32, ge=0, description="users of the long-text phase (speech excerpts); 0: none")
    load_protocol_users: int = Field(32, ge=0, description="this phase runs again on the v2 and HF routes; 0: none")
    load_long_servers: list[LoadServer] = Field(
        default_factory=lambda: list(DEFAULT_LONG_SERVERS), description="servers that also run the long-text phase"
    )
    peer_venv: str = Field(".venv-peer", description="infinity-emb's own venv (`make peer`)")
    server_cpus: list[int] | None = Field(None, description="CPUs the servers and locust are pinned to; default all")


class BenchmarkConfig(Config):
    """The whole configuration with the `bench` section typed: what the CLI loads and the benchmarks read."""

    bench: BenchConfig = Field(default_factory=BenchConfig)  # type: ignore[assignment]
