"""The core: events, log, bus, pipeline, clock, config, errors. Knows no vendor."""
