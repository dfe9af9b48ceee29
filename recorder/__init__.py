"""Live mode: runs the sources, appends to the log, publishes, runs reducers live."""
