"""Polygon.io options chains: models, client, poller, API simulator."""
