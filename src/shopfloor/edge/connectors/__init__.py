"""edge/connectors."""
