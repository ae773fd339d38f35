"""Corral's own API, version 1."""
