"""guardedge.bench: accuracy drift, latency, throughput and memory benchmarks (issue 5; not built yet)."""
