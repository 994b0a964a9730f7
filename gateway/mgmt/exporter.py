"""``GET /metrics`` through prometheus_client, over the node's summed metrics.

Theory of operation
-------------------
The figures do not live in prometheus_client's global registry: in a node every process
counts its own (:class:`gateway.metrics.Metrics`, the store's :class:`StoreStats`), and the
management process gathers them at scrape time over the bus (``Services.node_metrics``:
its own snapshot plus every worker's, plus the counters of workers that died).  So each
scrape builds a private ``CollectorRegistry`` holding

* one :class:`NodeCollector` over that scrape's sum (the families, the single values, the
  store's commit histograms, the certificate expiry), yielding prometheus_client metric
  families, so the text format (escaping, ``# HELP``/``# TYPE``, cumulative buckets) is the
  library's;
* the management API's request-duration histogram (:func:`request_histogram`: an ordinary
  prometheus_client ``Histogram`` with no registry of its own, one per app);
* prometheus_client's ``ProcessCollector`` (``process_*``: CPU, memory, file descriptors of
  the process that answers, the store owner in a node; the workers' own are not summed,
  docs/decisions.md "Metrics through prometheus_client").

Nothing is kept between scrapes here, so nothing can leak: a series exists while the
summed snapshot has it, and :meth:`Metrics.retain_connectors` drops a deleted connector's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Literal, NamedTuple

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client import Histogram as PromHistogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.metrics import (
    BATCH_SIZE_BOUNDS,
    COMMIT_SECONDS_BOUNDS,
    FAMILIES,
    Histogram,
    Metrics,
    Sample,
)
from gateway.store.api import StoreStats

__all__ = [
    "CONTENT_TYPE",
    "Family",
    "NodeCollector",
    "exposition",
    "request_histogram",
    "store_histograms",
]

# What generate_latest writes (the classic text format; newer prometheus_client releases
# name 1.0.0 as the latest, which only differs in how it escapes UTF-8 names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Family(NamedTuple):
    """A labelled family computed at scrape time by another module (the certificates'
    expiry, gateway/mgmt/tls.py)."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    samples: Sequence[tuple[Mapping[str, str], float]]


def _metric(name: str, kind: str, help_text: str) -> Metric:
    base = name.removesuffix("_total") if kind == "counter" else name
    return Metric(base, help_text, kind)


def store_histograms(st: StoreStats) -> list[Histogram]:
    """The store's commit latency and group size, as kept by its writer thread."""
    return [
        Histogram(
            "gateway_store_commit_duration_seconds",
            "Time one group commit took (BEGIN to COMMIT).",
            COMMIT_SECONDS_BOUNDS,
            st.commit_seconds_counts,
            st.commit_seconds_total,
        ),
        Histogram(
            "gateway_store_batch_size",
            "Submissions per group commit.",
            BATCH_SIZE_BOUNDS,
            st.batch_size_counts,
            st.submissions,
        ),
    ]


class NodeCollector(Collector):
    """One scrape's figures as prometheus_client metric families.  ``families`` is the
    node's summed :class:`Metrics`, ``samples`` the single values, ``histograms`` the
    per-bucket counts kept outside prometheus_client, ``extra`` labelled families from
    elsewhere.  ``connectors`` (the live ones) filters out a deleted connector's series
    that a worker's last snapshot may still carry."""

    def __init__(
        self,
        families: Metrics,
        samples: Sequence[Sample],
        histograms: Sequence[Histogram] = (),
        extra: Sequence[Family] = (),
        connectors: frozenset[str] | None = None,
    ) -> None:
        self.families = families
        self.samples = samples
        self.histograms = histograms
        self.extra = extra
        self.connectors = connectors

    def collect(self) -> Iterator[Metric]:
        if self.connectors is not None:
            self.families.retain_connectors(self.connectors)
        for attr, (name, kind, help_text) in FAMILIES.items():
            metric = _metric(name, kind, help_text)
            for labels, value in sorted(getattr(self.families, attr).items()):
                metric.add_sample(name, dict(labels), value)
            yield metric
        for s in self.samples:
            metric = _metric(s.name, s.kind, s.help)
            metric.add_sample(s.name, {}, s.value)
            yield metric
        for h in self.histograms:
            metric = Metric(h.name, h.help, "histogram")
            cumulative = list(accumulate(h.counts))
            for bound, n in zip([*map(floatToGoString, h.bounds), "+Inf"], cumulative, strict=True):
                metric.add_sample(f"{h.name}_bucket", {"le": bound}, n)
            metric.add_sample(f"{h.name}_count", {}, cumulative[-1])
            metric.add_sample(f"{h.name}_sum", {}, h.sum)
            yield metric
        for f in self.extra:
            metric = _metric(f.name, f.kind, f.help)
            for labels, value in f.samples:
                metric.add_sample(f.name, dict(labels), value)
            yield metric


def request_histogram() -> PromHistogram:
    """The management API's request durations by method, route template and status (the
    templates bound the label sets: a path's own identities never become labels)."""
    return PromHistogram(
        "gateway_api_request_duration_seconds",
        "Management API requests, from routing to the response object.",
        ("method", "route", "status"),
        registry=None,
        buckets=REQUEST_BUCKETS,
    )


def exposition(node: NodeCollector, *more: Collector) -> bytes:
    """The text of one scrape: ``node``, ``more`` (the request histogram), and this
    process's ``process_*`` metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(node)
    for collector in more:
        registry.register(collector)
    ProcessCollector(registry=registry)
    return generate_latest(registry)
