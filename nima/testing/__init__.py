"""Conformance kit: parity and benchmark helpers any plugin author can use.

nima.testing.attention   check_attention_parity: an attention plugin against attention.reference
nima.testing.positional  check_rope_parity: a RoPE implementation against positional.rope
"""
