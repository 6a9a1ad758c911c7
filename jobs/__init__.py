"""imdb-train jobs: build and submit Kubernetes Jobs for the trainer (never imports TensorFlow)."""
