"""mia: record futures order flow and options chains into a typed event log; replay it exactly."""

__version__ = "0.1.0"
