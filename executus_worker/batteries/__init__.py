"""batteries package."""
