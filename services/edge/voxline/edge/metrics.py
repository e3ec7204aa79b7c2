"""The edge's Prometheus metrics, served at ``/metrics`` on its HTTP port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Seconds: the edge's share is a few ms; buckets dense below 50 ms.
EDGE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class EdgeMetrics:
    """Peers open, audio frames dropped, and the orchestrator's first audio → first frame sent."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.peers_open = Gauge("voxline_edge_peers_open", "sessions open, by transport",
                                ["transport"], registry=self.registry)
        self.peers_refused = Counter("voxline_edge_peers_refused", "sessions refused, by reason",
                                     ["reason"], registry=self.registry)
        self.frames_dropped = Counter("voxline_edge_audio_frames_dropped",
                                      "audio frames dropped, by direction (in: to the orchestrator, "
                                      "out: reply frames past the playback bound)",
                                      ["direction"], registry=self.registry)
        self.flushes = Counter("voxline_edge_playback_flushes", "reply playback flushed (barge-in)",
                               ["transport"], registry=self.registry)
        self.first_frame = Histogram("voxline_edge_first_audio_to_frame_sent_seconds",
                                     "the orchestrator's first reply audio of a turn to its first "
                                     "frame sent (RTP or phone media)", ["transport"],
                                     buckets=EDGE_BUCKETS, registry=self.registry)
        self.frame_lateness = Histogram("voxline_edge_frame_lateness_seconds",
                                        "how late each 20 ms WebRTC frame left against its schedule "
                                        "(the edge's own send jitter; a starved event loop shows here)",
                                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
                                        registry=self.registry)
        for transport in ("webrtc", "phone"):
            self.peers_open.labels(transport).set(0)
        for direction in ("in", "out"):
            self.frames_dropped.labels(direction)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

