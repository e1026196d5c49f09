"""Monitoring: metrics, prediction records, drift, tracing."""
