"""nomad-lite's gRPC SchedulerService over Corral's core (docs/api/nomad-lite.md#grpc)."""
