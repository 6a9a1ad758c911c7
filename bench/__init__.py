"""Benchmarks: our trainer against the original exercise's plain Keras, speed and memory."""
