"""`python -m timm_fct.report RUN [RUN ...] --out DIR`: see command.py."""
import sys

from .command import main

if __name__ == '__main__':
    sys.exit(main())
