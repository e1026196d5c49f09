"""HTTP serving: answers with statuses, the error-to-status map, server-level routes."""
