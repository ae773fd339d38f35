"""The worker: registers, heartbeats, receives work, runs it through a runtime, ships logs and results."""
