"""Tests of the built container image (make image-test)."""
