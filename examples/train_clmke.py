#!/usr/bin/env python
"""Train C-LMKE for filtered link prediction: `accelerate launch examples/train_clmke.py --help`.

The program lives in the package (`lmke_hf.commands.train_clmke`, also `lmke-hf train-clmke`); this file runs it as a
script."""

from lmke_hf.commands.train_clmke import main, parse_args

if __name__ == "__main__":
    main(parse_args())
