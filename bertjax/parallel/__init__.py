"""Meshes, logical-axis sharding and multi-host start-up."""
