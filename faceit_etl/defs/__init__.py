"""The Dagster layer: thin assets, checks and resources over the domain modules."""
