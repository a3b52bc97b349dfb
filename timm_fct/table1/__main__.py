"""`python -m timm_fct.table1 [FLAGS]`: see protocol.py."""
import sys

from .protocol import main

if __name__ == '__main__':
    sys.exit(main())
