"""Runtimes run one task attempt: a container through the Docker Engine, or a host process."""
