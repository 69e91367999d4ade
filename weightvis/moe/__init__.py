"""Mixture-of-Experts: expert structure, statistics, similarity and the routing probe."""
