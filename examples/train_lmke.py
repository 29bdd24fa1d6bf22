#!/usr/bin/env python
"""Train LMKE for triple classification: `accelerate launch examples/train_lmke.py --help`.

The program lives in the package (`lmke_hf.commands.train_lmke`, also `lmke-hf train-lmke`); this file runs it as a
script."""

from lmke_hf.commands.train_lmke import main, parse_args

if __name__ == "__main__":
    main(parse_args())
