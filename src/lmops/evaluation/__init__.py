"""Metric suites and evaluation reports."""
