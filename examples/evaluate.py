#!/usr/bin/env python
"""Evaluate a trained LMKE / C-LMKE model (a saved folder or a Hub id) on a split of a knowledge graph: `accelerate launch examples/evaluate.py --help`.

The program lives in the package (`lmke_hf.commands.evaluate`, also `lmke-hf evaluate`); this file runs it as a
script."""

import sys

from lmke_hf.cli import run_program
from lmke_hf.commands import evaluate

if __name__ == "__main__":
    sys.exit(run_program(evaluate))
