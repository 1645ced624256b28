"""What operators see: restore listeners, metrics."""
