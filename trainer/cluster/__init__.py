"""Clusters: which workers take part, the distribution strategy, and preemption."""
