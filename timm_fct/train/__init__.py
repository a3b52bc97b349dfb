"""Training: `python -m timm_fct.train` (command.py), the epoch loop (loop.py) and what it is built from (build.py),
its flags (args.py), the one-cycle schedule, resuming (resume.py) and a run's identity (identity.py), and the
run's record (record.py). The checkout's train.py and the `timm-fct-train` command run command.main."""
