"""The tools of the example support agent (see examples/README.md)."""
