#!/usr/bin/env python3
"""`python hub/publish.py RUN ...` in a checkout is `python -m timm_fct.export RUN ...`: a run as a Hugging Face Hub
model repository (timm_fct/export/command.py)."""
import sys

from timm_fct.export.command import main

if __name__ == '__main__':
    sys.exit(main())
