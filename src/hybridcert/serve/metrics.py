"""Prometheus metrics of the service (one registry per service, so several can coexist)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   10.0)
QUERY_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536, 262144)
FILL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


class Metrics:
    """Counters and histograms of requests, decisions and batches.

    Names: ``hybridcert_requests_total{status}``, ``hybridcert_decisions_total{decision}``,
    ``hybridcert_abstentions_total``, ``hybridcert_timeouts_total``,
    ``hybridcert_rejected_total`` (queue full or shutting down),
    ``hybridcert_request_latency_seconds``, ``hybridcert_queries_per_decision``,
    ``hybridcert_batch_fill`` (rows / batch size), ``hybridcert_batch_rows_total``,
    ``hybridcert_queue_depth``, ``hybridcert_read_timeouts_total{phase}`` (connections
    closed at a deadline: ``headers`` partly received, ``idle`` with no byte of a request,
    ``body`` too slow).  ``hybridcert_requests_total`` counts the responses to requests for
    ``/v1/moderate`` whose headers were read (a response sent before that cannot be
    attributed to a path).
    """

    def __init__(self, batch_size: int, pending=None):
        self.registry = CollectorRegistry()
        self.batch_size = batch_size
        r = self.registry
        self.requests = Counter("hybridcert_requests", "Responses to /v1/moderate requests "
                                "whose headers were read, by HTTP status (499: the client "
                                "went away first)",
                                ["status"], registry=r)
        self.decisions = Counter("hybridcert_decisions", "Decisions by outcome", ["decision"],
                                 registry=r)
        self.abstentions = Counter("hybridcert_abstentions", "Decisions that abstained",
                                   registry=r)
        self.timeouts = Counter("hybridcert_timeouts", "Requests that ran past their timeout",
                                registry=r)
        self.read_timeouts = Counter("hybridcert_read_timeouts", "Connections closed at a "
                                     "deadline: headers (partly received, 408), idle (no "
                                     "byte of a request, no response), body (408)",
                                     ["phase"],
                                     registry=r)
        self.rejected = Counter("hybridcert_rejected", "Requests refused: queue full or "
                                "shutting down", registry=r)
        self.latency = Histogram("hybridcert_request_latency_seconds", "Latency of decided "
                                 "requests", buckets=LATENCY_BUCKETS, registry=r)
        self.queries = Histogram("hybridcert_queries_per_decision", "Base-model evaluations "
                                 "per decision", buckets=QUERY_BUCKETS, registry=r)
        self.fill = Histogram("hybridcert_batch_fill", "Rows of each forward batch / batch "
                              "size", buckets=FILL_BUCKETS, registry=r)
        self.rows = Counter("hybridcert_batch_rows", "Noisy copies evaluated", registry=r)
        self.queue_depth = Gauge("hybridcert_queue_depth", "Requests queued or running",
                                 registry=r)
        if pending is not None:
            self.queue_depth.set_function(pending)

    def on_batch(self, rows: int, seconds: float) -> None:
        self.fill.observe(rows / self.batch_size)
        self.rows.inc(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
