"""Benchmark harness: load generators, peer brokers/servers and side-by-side scenarios.

Everything here binds and connects on 127.0.0.1 only.  `scripts/bench` is the entry point;
`bench/RESULTS.md` holds the last full run.
"""
