"""historian."""
