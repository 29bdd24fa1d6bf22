#!/usr/bin/env python
"""Train C-LMKE for filtered link prediction: `accelerate launch examples/train_clmke.py --help`.

The program lives in the package (`lmke_hf.commands.train_clmke`, also `lmke-hf train-clmke`); this file runs it as a
script."""

import sys

from lmke_hf.cli import run_program
from lmke_hf.commands import train_clmke

if __name__ == "__main__":
    sys.exit(run_program(train_clmke))
