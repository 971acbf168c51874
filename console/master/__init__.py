"""The embedded master: scheduler, planner, executions in flight, and their outcomes."""
