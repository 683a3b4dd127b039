"""Shared test helpers (not test modules): real-scene crops, bad inputs, a loopback Hub server."""
