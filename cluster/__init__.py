"""Cluster manifests and their validator (``python -m cluster.validate``)."""
