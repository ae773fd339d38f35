"""HTTP: the app factory, the error envelope, the native v1 API (and, later, the seed dialects)."""
