"""Plain types and rules: jobs, tasks, nodes, states and resources. No I/O here."""
