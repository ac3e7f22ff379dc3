"""Contracts: the rules that the engine, the ``localet`` CLI and the Scipion plugin must agree on.

Each module holds one concept, written once, and imports neither torch nor anything heavy at
module level, so the plugin (whose every protocol subprocess would pay for torch) and the CLI's
option parsing can use them freely:

- :mod:`~localet_core.contracts.pairs`: the ``pairs.star`` table of training pairs (one writer,
  one reader).
- :mod:`~localet_core.contracts.model_card`: the model file format, reading a model card from a
  ``.safetensors`` header, and the warnings when data lie outside a model's training range.
- :mod:`~localet_core.contracts.naming`: the names of the files a command writes next to its
  output (odd/even half tomograms, saved half-set reconstructions, trained model files).
- :mod:`~localet_core.contracts.tolerances`: when two pixel sizes count as the same.
- :mod:`~localet_core.contracts.fsc_star`: the block and column names of the FSC STAR table.

Nothing is imported here: ``import localet_core.contracts.naming`` loads that module only.
"""
