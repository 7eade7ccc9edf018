"""Benchmarks: engine latency sweeps, HTTP load tests, and the report writer."""
