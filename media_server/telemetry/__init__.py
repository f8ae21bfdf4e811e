"""What the server tells Prometheus: counters and histograms observed where things
happen, gauges read from the server's state at scrape time."""

from media_server.telemetry.load import LoadCollector, LoadSnapshot
from media_server.telemetry.metrics import ServerMetrics, SpeechKind

__all__ = ["LoadCollector", "LoadSnapshot", "ServerMetrics", "SpeechKind"]
