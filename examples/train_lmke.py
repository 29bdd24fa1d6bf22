#!/usr/bin/env python
"""Train LMKE for triple classification: `accelerate launch examples/train_lmke.py --help`.

The program lives in the package (`lmke_hf.commands.train_lmke`, also `lmke-hf train-lmke`); this file runs it as a
script."""

import sys

from lmke_hf.cli import run_program
from lmke_hf.commands import train_lmke

if __name__ == "__main__":
    sys.exit(run_program(train_lmke))
