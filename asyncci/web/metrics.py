"""`/metrics` (Prometheus text, via prometheus-client) and `/badge/{repo}.svg`.

Metrics are read at scrape time from the store and the scheduler, so they are true after
a restart and cost nothing between scrapes.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..model import JobState
from ..refs import branch_ref
from .actions import load_repo
from .keys import SCHEDULER, STORE

routes = web.RouteTableDef()
BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)
BADGE_COLOURS = {
    JobState.PASSED: "#2ea043", JobState.FAILED: "#cf222e", JobState.ERRORED: "#bf8700",
    JobState.CANCELLED: "#6e7781",
}


class _Snapshot(Collector):
    """Families computed before the scrape is rendered."""

    def __init__(self, families: list[GaugeMetricFamily | HistogramMetricFamily]) -> None:
        self._families = families

    def collect(self) -> list[GaugeMetricFamily | HistogramMetricFamily]:
        return self._families


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    store, scheduler = request.app[STORE], request.app[SCHEDULER]
    builds, jobs = await store.counts()
    families: list[GaugeMetricFamily | HistogramMetricFamily] = []
    for name, by_state in (("builds", builds), ("jobs", jobs)):
        gauge = GaugeMetricFamily(f"asyncci_{name}", f"{name.capitalize()} by state",
                                  labels=["state"])
        for state in JobState:
            gauge.add_metric([state], by_state.get(state, 0))
        families.append(gauge)
    families.append(GaugeMetricFamily("asyncci_queue_length", "Queued jobs",
                                      value=len(scheduler.queue)))
    histograms = await store.histograms(BUCKETS)
    for name, metric, help_text in (
        ("wait", "asyncci_job_queue_wait_seconds", "Seconds jobs waited in the queue"),
        ("duration", "asyncci_job_duration_seconds", "Seconds finished jobs ran"),
    ):
        buckets, total, count = histograms[name]
        histogram = HistogramMetricFamily(metric, help_text)
        histogram.add_metric(
            [], [(str(b), float(c)) for b, c in zip(BUCKETS, buckets)] + [("+Inf", float(count))],
            total)
        families.append(histogram)
    slots = GaugeMetricFamily("asyncci_host_slots", "Build slots", labels=["host"])
    busy = GaugeMetricFamily("asyncci_host_slots_busy", "Build slots in use", labels=["host"])
    up = GaugeMetricFamily("asyncci_host_up", "1 when the host is online", labels=["host"])
    for host in scheduler.host_statuses():
        slots.add_metric([host.name], host.slots)
        busy.add_metric([host.name], host.busy)
        up.add_metric([host.name], int(host.up))
    families += [slots, busy, up]
    registry = CollectorRegistry()
    registry.register(_Snapshot(families))
    return web.Response(body=generate_latest(registry),
                        content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


@routes.get("/badge/{repo}.svg")
async def badge(request: web.Request) -> web.Response:
    name = load_repo(request).name
    branch = request.query.get("branch")
    state = await request.app[STORE].latest_finished_state(
        name, branch_ref(branch) if branch else None)
    text = str(state) if state else "unknown"
    return web.Response(text=badge_svg("build", text, BADGE_COLOURS.get(state, "#9f9f9f")),  # type: ignore[arg-type]
                        content_type="image/svg+xml", headers={"Cache-Control": "no-cache"})


def badge_svg(label: str, value: str, colour: str) -> str:
    """A flat two-part badge; widths from character counts (Verdana 11px ~ 7 px/char)."""
    left, right = 7 * len(label) + 12, 7 * len(value) + 12
    label, value = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + right}" height="20" '
        f'role="img" aria-label="{label}: {value}"><title>{label}: {value}</title>'
        f'<rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        f'<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" '
        f'font-size="11"><text x="{left / 2}" y="14">{label}</text>'
        f'<text x="{left + right / 2}" y="14">{value}</text></g></svg>'
    )
