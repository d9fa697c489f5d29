"""Prometheus metrics of the worker (`worker.py`, GET /metrics on its web server) and the sink (`sink.py`,
`ccmeter sink --metrics-bind`); the series are listed in docs/operators.md "Metrics and alerts".

Each process builds its own `CollectorRegistry` (never prometheus_client's global one). Values are read from the
service's own counters when Prometheus scrapes; the worker's hot path only adds its per-batch totals.
"""
