"""train.py's pieces: its flags, the one-cycle schedule, resuming, and the run's training record."""
