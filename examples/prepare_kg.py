#!/usr/bin/env python
"""Convert a KG-BERT / LMKE data folder into a Hub-ready dataset folder (and optionally push it): `python examples/prepare_kg.py --help`.

The program lives in the package (`lmke_hf.commands.prepare_kg`, also `lmke-hf prepare`); this file runs it as a
script."""

import sys

from lmke_hf.cli import run_program
from lmke_hf.commands import prepare_kg

if __name__ == "__main__":
    sys.exit(run_program(prepare_kg))
