"""framework: a Python application framework with a background-job battery wire-compatible with Go asynq."""
