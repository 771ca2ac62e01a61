"""critic package."""
