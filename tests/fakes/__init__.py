"""Test fakes at the network boundary: a Kubernetes API server on loopback."""
