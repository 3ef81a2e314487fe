"""Reporting: metrics, statistics, tables, plots, the cost bench, the report and the results database."""
