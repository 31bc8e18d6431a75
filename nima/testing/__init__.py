"""Conformance kit: parity and benchmark helpers any plugin author can use.

nima.testing.attention   check_attention_parity: an attention plugin against attention.reference
                         (BIAS_CASES: with an additive bias)
nima.testing.positional  check_rope_parity: a RoPE implementation against positional.rope;
                         check_relative_bias: a positional attention bias depends on offsets only
nima.testing.layers      check_layer_parity: a norm or mlp plugin against its written-out formula
"""
