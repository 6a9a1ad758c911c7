"""A local Kubernetes cluster for imdb-train: a real control plane built from the Kubernetes
sources (cluster/controlplane), GKE-like nodes that run pods in the project's image
(cluster/node.py, cluster/runtime.py, cluster/network.py), and a GCS emulator for the bucket.
`make cluster` starts it; `make cluster-down` stops it."""
