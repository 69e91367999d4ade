"""Mixture-of-Experts: expert structure and true values, statistics, similarity, routing."""
