#!/usr/bin/env python3
"""`python reproduce.py [FLAGS]` in a checkout is `python -m timm_fct.table1 [FLAGS]`: the paper's Table 1 in one
command (timm_fct/table1/protocol.py)."""
import sys

from timm_fct.table1.protocol import main

if __name__ == '__main__':
    sys.exit(main())
