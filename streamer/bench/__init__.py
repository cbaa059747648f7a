"""Benchmarks shipped with the package (``streamer bench ...``); never part of the tests."""
