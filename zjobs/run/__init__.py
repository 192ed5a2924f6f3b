"""The run layer: daemons, child processes, the supervisor and system files (signals,
argv, exit codes)."""
