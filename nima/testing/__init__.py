"""Conformance kit: every family's contract checks, for NIMA's plugins and anyone's.

nima.testing.conformance  conformance("my-package"): one pytest test per plugin and declared
                          capability (the pytest plugin, nima.testing.pytest_plugin, expands it)
nima.testing.kit          the checks as data (Check, run_check, collect, select): what the pytest
                          plugin and `nima check` run
nima.testing.attention   check_attention_parity: an attention plugin against attention.reference
                         (BIAS_CASES: with an additive bias); PROPERTY_CASES per property
nima.testing.positional  check_rope_parity, check_relative_bias, check_relative_rotation,
                         check_chunked (whole == chunks with explicit positions)
nima.testing.layers      check_layer_parity: a norm or mlp plugin against its written-out formula
nima.testing.tokenizers  round trip (hypothesis), save/load, special tokens, encode_batch
nima.testing.samplers    the rule a sampler declares (top_k, top_p, min_p, temperature, greedy)
nima.testing.optim       optimizer (a toy loss falls, state_dict round trip) and scheduler checks
nima.testing.data        dataset (splits, stable checksum) and logger (events, its own error)

Importing this package is cheap (no torch): pytest loads it in every project.
"""
