#!/usr/bin/env python
"""Evaluate a trained LMKE / C-LMKE model (a saved folder or a Hub id) on a split of a knowledge graph: `accelerate launch examples/evaluate.py --help`.

The program lives in the package (`lmke_hf.commands.evaluate`, also `lmke-hf evaluate`); this file runs it as a
script."""

from lmke_hf.commands.evaluate import main, parse_args

if __name__ == "__main__":
    main(parse_args())
