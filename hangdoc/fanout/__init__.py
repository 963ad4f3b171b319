"""Fan-out: one capture per node, through the engines clusters already run (Ray); recipes for the rest are in docs/reports.md."""
