"""The runtime: tasks, the processing thread, the state updater (restore) thread, assignment."""
