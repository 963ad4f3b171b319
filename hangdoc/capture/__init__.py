"""Capture: snapshot a hung node into a bundle without disturbing the job."""
