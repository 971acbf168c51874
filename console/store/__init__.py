"""The one place that speaks SQL: the store interface, its read models, export, and the backends."""
