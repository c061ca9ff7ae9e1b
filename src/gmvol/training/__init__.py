"""Training with Catalyst: engine choice, the runner, curves logging."""
