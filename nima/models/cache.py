"""The KV cache: static, preallocated key/value buffers per layer, owned by the model.

    cache = model.new_cache(batch_size)                  # (B, Hkv, max_len, D) per layer
    logits = model(prompt, cache=cache, last_only=True)  # prefill: N positions at once
    logits = model(next_ids[:, None], cache=cache, last_only=True)  # decode: one position

Each forward appends its N positions after the `length` already cached; every layer writes its
rotated keys and values there and attends over all `length + N` keys. The queries are then the
last N of Nk positions, which is the attention contract's bottom-right causal alignment, so any
attention plugin works with the cache unchanged. The cache also keeps, per slot, the key's
position (for a positional attention bias such as ALiBi) and whether it may be attended (the key
padding mask given when that token went in), so a left-padded prompt stays masked while decoding.

`length` is a host integer known from shapes alone: nothing reads tensor values on the host.
"""

from __future__ import annotations

import torch

from nima.errors import NimaError


class CacheFullError(NimaError, ValueError):
    """More positions than the cache was allocated for."""


class LayerCache:
    """One layer's buffers; its attention layer writes the new keys and values through update."""

    def __init__(self, owner: KVCache, index: int) -> None:
        self.owner, self.index = owner, index

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, Hkv, N, D) at the slots the owner just claimed; return every key and
        value so far, (B, Hkv, length, D) views of the buffers."""
        end = self.owner.length
        start = end - k.shape[2]
        keys, values = self.owner.keys[self.index], self.owner.values[self.index]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]


class KVCache:
    """Keys and values of every layer for `batch_size` sequences of up to `max_len` positions."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.positions = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
        self.visible = torch.ones(batch_size, max_len, dtype=torch.bool, device=device)
        self.max_len = max_len
        self.length = 0  # positions cached so far
        self.masked = False  # a key padding mask has been given since the last reset

    @property
    def batch_size(self) -> int:
        return self.positions.shape[0]

    def layer(self, index: int) -> LayerCache:
        return LayerCache(self, index)

    def append(
        self, positions: torch.Tensor, key_padding_mask: torch.Tensor | None, n: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Claim the next n slots for positions (n,) or (B, n) and their key padding mask (B, n).

        Returns the positions (B, Nk) and the key padding mask (B, Nk) of every key so far (the
        mask None while nothing was ever masked, so plugins keep their unmasked fast paths).
        """
        start, end = self.length, self.length + n
        if end > self.max_len:
            raise CacheFullError(
                f"The KV cache holds {self.max_len} positions; {self.length} are cached and "
                f"{n} more were given. Allocate a longer one (model.new_cache(batch_size, "
                f"max_len=...)), or call cache.reset() to start a new sequence."
            )
        self.positions[:, start:end] = positions
        if key_padding_mask is not None:
            self.visible[:, start:end] = key_padding_mask
            self.masked = True
        self.length = end
        return self.positions[:, :end], self.visible[:, :end] if self.masked else None

    def reorder(self, batch_index: torch.Tensor) -> None:
        """Keep sequence batch_index[i] as sequence i (beam search); batch_index (B',) long.
        With the batch size kept (every beam step), only the `length` filled slots are copied,
        in place: a step costs the cached part, not the whole max_len buffers."""
        if batch_index.numel() == self.batch_size:
            L = self.length
            for buffer in (*self.keys, *self.values):  # (B, Hkv, max_len, D)
                buffer[:, :, :L] = buffer[:, :, :L].index_select(0, batch_index)
            for buffer in (self.positions, self.visible):  # (B, max_len)
                buffer[:, :L] = buffer[:, :L].index_select(0, batch_index)
            return
        self.keys = [k.index_select(0, batch_index) for k in self.keys]
        self.values = [v.index_select(0, batch_index) for v in self.values]
        self.positions = self.positions.index_select(0, batch_index)
        self.visible = self.visible.index_select(0, batch_index)

    def crop(self, length: int) -> None:
        """Forget every position from `length` on (speculative decoding drops rejected tokens);
        their slots are overwritten by the next append."""
        if not 0 <= length <= self.length:
            raise ValueError(f"crop to {length}: the cache holds {self.length} positions")
        self.length = length

    def reset(self) -> None:
        """Empty the cache for new sequences (the buffers are kept and overwritten)."""
        self.length = 0
        self.masked = False
        self.visible.fill_(True)
