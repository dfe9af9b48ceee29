"""The outside world: one subpackage per source, wire format -> events."""
