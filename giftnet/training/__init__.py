"""The trainer: configuration, distributed set-up, precision, checkpoints, monitoring, the loop."""
