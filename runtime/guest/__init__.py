"""The guest's workload: a traffic generator and a sink that checks every frame it receives
(`traffic`). It knows only frames, nothing of the shell or the plugin, so the host and the
conformance suite run the same guest.
"""
from .traffic import (
                      ETHERTYPE,
                      HEADER,
                      IMIX,
                      MAX_FRAME,
                      MIN_FRAME,
                      Flow,
                      FlowCheck,
                      Sink,
                      TrafficGen,
                      build,
                      size_schedule,
)

__all__ = ["ETHERTYPE", "HEADER", "IMIX", "MAX_FRAME", "MIN_FRAME", "Flow", "FlowCheck", "Sink",
           "TrafficGen", "build", "size_schedule"]
