"""`python -m timm_fct.export RUN --out DIR` / `--repo-id org/name`: see command.py."""
import sys

from .command import main

if __name__ == '__main__':
    sys.exit(main())
