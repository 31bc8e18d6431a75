"""The KV cache: cached prefill then one-token decode steps give the uncached forward's logits,
for every built-in attention x positional pair, with batch 2, GQA and a left-padded prompt;
chunked prefill, last_only, reorder (beam search), reset, a full cache, and no host syncs.

attention.triton runs under the Triton interpreter on CPU (tests/conftest.py); it takes no
additive bias, so with positional.alibi the capability check refuses it (tested here too).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import nima
from nima.capabilities import check_model
from nima.errors import CapabilityError
from nima.models.cache import CacheFullError
from nima.models.gpt import GPT


class HostSyncs(TorchDispatchMode):
    """Counts `_local_scalar_dense`: a device-to-host sync (`.item()`, `bool(tensor)`)."""

    count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket.__name__ == "_local_scalar_dense"
        return func(*args, **(kwargs or {}))


ATTENTIONS = ["reference", "sdpa", "triton"]
POSITIONALS = ["rope", "rope_triton", "alibi", "learned", "sinusoidal", "none"]
TOLERANCE = 1e-5  # fp32, max abs error of the logits (the bar)
VOCAB, PROMPT, TOTAL = 37, 7, 12

needs_triton = pytest.mark.skipif(
    "cpu" not in nima.entry("attention", "triton").capabilities["devices"]
    and not torch.cuda.is_available(),
    reason="Triton kernels need CUDA or TRITON_INTERPRET=1",
)


def make(attention: str, positional: str, **overrides) -> GPT:
    torch.manual_seed(0)
    options = dict(
        vocab_size=VOCAB, context_length=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
        attention=nima.get("attention", attention)(), positional=nima.get("positional", positional),
    )  # fmt: skip
    return GPT(**(options | overrides)).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens (2, TOTAL), key padding mask (row 1's prompt left-padded by 3) and positions
    counting real tokens only (so both rows' first real token is at position 0)."""
    tokens = torch.randint(0, VOCAB, (2, TOTAL), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, TOTAL, dtype=torch.bool)
    mask[1, :3] = False
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (2, TOTAL)
    return tokens, mask, positions


def cached_logits(model: GPT, chunks: list[int]) -> torch.Tensor:
    """Logits (2, TOTAL, V): the prompt prefilled in `chunks`, then one token per step."""
    tokens, mask, positions = padded_batch()
    cache, out, start = model.new_cache(2), [], 0
    for size in [*chunks, *[1] * (TOTAL - sum(chunks))]:
        end = start + size
        out.append(
            model(tokens[:, start:end], positions=positions[:, start:end], cache=cache,
                  key_padding_mask=mask[:, start:end] if start < PROMPT else None)
        )  # fmt: skip
        start = end
    assert cache.length == TOTAL
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("attention", ATTENTIONS)
@torch.no_grad()
def test_cached_decode_gives_the_uncached_logits(attention: str, positional: str) -> None:
    uses_triton = "triton" in (attention, positional)
    if uses_triton and "cpu" not in nima.entry("attention", "triton").capabilities["devices"]:
        pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1")
    if attention == "triton" and positional == "alibi":
        pytest.skip("attention.triton takes no bias: refused, see test_triton_with_alibi_...")
    model = make(attention, positional)
    tokens, mask, positions = padded_batch()
    want = model(tokens, positions=positions, key_padding_mask=mask)  # (2, TOTAL, V)
    for chunks in ([PROMPT], [3, PROMPT - 3]):  # one prefill; a chunked one
        got = cached_logits(model, chunks)
        error = (got - want).abs().max().item()
        print(f"{attention} x {positional}, prefill {chunks}: max abs error {error:.2e}")
        assert error <= TOLERANCE, f"{attention} x {positional}, prefill {chunks}: {error:.2e}"


@needs_triton
def test_triton_with_alibi_is_refused_before_training_naming_sdpa() -> None:
    model = make("triton", "alibi")
    with pytest.raises(CapabilityError, match=r"does not support bias\..*: reference, sdpa"):
        check_model(model, nima.hooks.system().registries, device="cpu", dtype="float32")


@torch.no_grad()
def test_last_only_is_the_last_row() -> None:
    model = make("sdpa", "rope")
    tokens, _, _ = padded_batch()
    full = model(tokens)
    last = model(tokens, last_only=True)
    assert last.shape == (2, 1, VOCAB)
    torch.testing.assert_close(last, full[:, -1:])


@torch.no_grad()
def test_reorder_follows_the_chosen_sequences() -> None:
    """Beam search: after reorder([1, 1, 0]) row i continues sequence batch_index[i]."""
    model = make("sdpa", "alibi")
    tokens = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(2))
    cache = model.new_cache(2)
    model(tokens[:, :5], cache=cache)
    cache.reorder(torch.tensor([1, 1, 0]))
    assert cache.batch_size == 3
    step = model(tokens[[1, 1, 0], 5:], cache=cache)
    want = model(tokens[[1, 1, 0]])[:, 5:]
    torch.testing.assert_close(step, want, atol=TOLERANCE, rtol=0)


@torch.no_grad()
def test_reset_starts_new_sequences_and_a_full_cache_says_so() -> None:
    model = make("sdpa", "rope")
    tokens = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))
    cache = model.new_cache(2, max_len=10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 0] = False
    model(tokens, cache=cache, key_padding_mask=mask)
    with pytest.raises(CacheFullError, match="holds 10 positions; 10 are cached and 1 more"):
        model(tokens[:, :1], cache=cache)
    cache.reset()
    assert cache.length == 0 and not cache.masked
    torch.testing.assert_close(model(tokens[:, :4], cache=cache), model(tokens[:, :4]))


@pytest.mark.parametrize("positional", ["rope", "alibi", "learned"])
@torch.no_grad()
def test_decoding_makes_no_host_sync(positional: str) -> None:
    model = make("sdpa", positional)
    tokens, mask, positions = padded_batch()
    cache = model.new_cache(2)
    model(tokens[:, :PROMPT], positions=positions[:, :PROMPT], key_padding_mask=mask[:, :PROMPT],
          cache=cache)  # fmt: skip
    with HostSyncs() as syncs:
        model(tokens[:, PROMPT : PROMPT + 1], cache=cache, last_only=True)
    assert syncs.count == 0


def test_the_cache_has_the_models_layout() -> None:
    model = make("sdpa", "rope", n_layers=3)
    cache = model.new_cache(4)
    assert len(cache.keys) == len(cache.values) == 3
    assert cache.keys[0].shape == (4, 2, 16, 8)  # (B, Hkv, max_len, D)
    assert cache.keys[0].dtype == torch.float32 and cache.max_len == model.context_length
    assert model.new_cache(1, 40, dtype=torch.bfloat16).keys[0].shape == (1, 2, 40, 8)
