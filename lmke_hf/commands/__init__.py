"""The command-line programs of lmke_hf, each a module with `parse_args(argv)` and `main(args)`: `train_clmke`,
`train_lmke`, `evaluate`, `prepare_kg` (and `lmke_hf.modelcard` for export-card). `lmke-hf <command>` runs them from
any install, a wheel included; `examples/*.py` are thin wrappers that run them as scripts, and
`accelerate launch -m lmke_hf.cli train-clmke ...` (or `accelerate launch examples/train_clmke.py ...`) runs them on
several processes."""
