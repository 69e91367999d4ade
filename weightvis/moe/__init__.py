"""Mixture-of-Experts: expert structure, statistics, similarity and routing (issue 12)."""
