"""Corral: a distributed container job orchestrator."""

__version__ = "0.1.0"
