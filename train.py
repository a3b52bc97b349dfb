#!/usr/bin/env python3
"""`python train.py [FLAGS]` in a checkout is `python -m timm_fct.train [FLAGS]`: the loop lives in timm_fct/train/."""
import sys

from timm_fct.train.command import main

if __name__ == '__main__':
    sys.exit(main())
