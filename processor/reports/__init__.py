"""Rendering of licenses usage reports (JSON, CSV, terminal table)."""
