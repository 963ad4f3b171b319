"""Analysis passes: pure functions from bundle tables (and earlier findings) to findings."""
