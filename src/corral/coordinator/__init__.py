"""Services over the store and the scheduler: submit, cancel, restart, agents' reports, leases."""
