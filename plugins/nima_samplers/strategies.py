"""Decoding strategies: each owns the loop from prompts to completions.

A strategy is called as `strategy(model, job)` (nima.generate.engine: Job, Completion, Piece)
and is a generator: it yields text Pieces as they become final (for streaming) and returns one
Completion per prompt.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from nima.errors import ConfigError
from nima.generate.engine import (
    Completion,
    Decoder,
    Job,
    Piece,
    RowText,
    Run,
    before_stop,
    stop_position,
)
from nima.generate.processing import RowRandom
from nima.validation import Range, checked


class SampleStrategy:
    """One token per step and row through the sampler chain (greedy when it ends with greedy)."""

    def __call__(self, model, job: Job) -> Run:
        B = len(job.prompts)
        decoder = Decoder(model, job.prompts, job.max_new_tokens, overflow=job.overflow,
                          use_cache=job.use_cache)  # fmt: skip
        rng = RowRandom([job.seed + i for i in range(B)], decoder.ids.device)
        rows = [RowText(job) for _ in range(B)]
        logits = decoder.prefill()  # (B, V)
        for t in range(job.max_new_tokens):
            next_ids = job.chain(decoder.so_far, logits, rng)  # (B,)
            for i, token in enumerate(next_ids.tolist()):
                if not rows[i].done and (piece := rows[i].add(token)):
                    yield Piece(i, piece)
            if all(r.done for r in rows) or t == job.max_new_tokens - 1:
                break
            for i, r in enumerate(rows):
                if job.overflow == "stop" and not r.done and decoder.full(i):
                    if piece := r.finish("context"):
                        yield Piece(i, piece)
            if all(r.done for r in rows):
                break
            logits = decoder.step(next_ids)
        for i, r in enumerate(rows):
            if not r.done and (piece := r.finish("length")):
                yield Piece(i, piece)
        return [r.completion() for r in rows]


@checked
class Beam:
    """Beam search with n-best lists, scoring sum(log p) / length ** length_penalty.

    The chain's processors shape the log-probabilities (temperature, penalties, top-k ...); its
    selector is not used. A hypothesis ends at eos or a stop string (the length counts the eos);
    early_stopping ends a prompt once num_beams hypotheses have ended, otherwise once no live
    beam can beat the worst of them (Hugging Face's rule: best live sum / current length ** lp).
    """

    def __init__(
        self,
        num_beams: Annotated[int, Range(ge=1)] = 4,
        length_penalty: Annotated[float, Range(ge=-10, le=10)] = 1.0,
        early_stopping: bool = False,
        num_return: Annotated[int, Range(ge=1)] = 1,
    ) -> None:
        if num_return > num_beams:
            raise ConfigError(
                f"beam: num_return={num_return} is more than num_beams={num_beams}; "
                f"return at most as many hypotheses as beams"
            )
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.early_stopping, self.num_return = early_stopping, num_return

    def _score(self, logp_sum: float, length: int) -> float:
        return logp_sum / max(length, 1) ** self.length_penalty

    def __call__(self, model, job: Job) -> Run:
        B, K = len(job.prompts), self.num_beams
        P = max(len(p) for p in job.prompts)
        decoder = Decoder(model, [p for p in job.prompts for _ in range(K)], job.max_new_tokens,
                          overflow=job.overflow, use_cache=job.use_cache)  # fmt: skip
        scores = torch.zeros(B, K, device=decoder.ids.device)
        scores[:, 1:] = float("-inf")  # the K copies of a prompt start as one beam
        ended: list[list[Completion]] = [[] for _ in range(B)]
        done = [False] * B
        logits = decoder.prefill()  # (B*K, V)
        for t in range(job.max_new_tokens):
            logp = job.chain.process(decoder.so_far, logits).log_softmax(dim=-1)  # (B*K, V)
            V = logp.size(-1)
            total = (scores.reshape(B * K, 1) + logp).view(B, K * V)
            top, flat = total.topk(2 * K, dim=-1)  # (B, 2K): enough to keep K live beams
            history = decoder.so_far[:, P:].tolist()  # (B*K, t) tokens generated so far
            index, tokens = list(range(B * K)), [0] * (B * K)  # each row's parent and token
            live_scores = torch.full((B, K), float("-inf"))
            for b, (row_top, row_flat) in enumerate(zip(top.tolist(), flat.tolist(), strict=True)):
                if done[b]:
                    continue
                live = 0
                for rank, (s, f) in enumerate(zip(row_top, row_flat, strict=True)):
                    beam, token = b * K + f // V, f % V
                    ids = history[beam] + [token]
                    ending = "eos" if token == job.eos_id else None
                    if (
                        ending is None
                        and job.stop
                        and stop_position(job.decode(ids), job.stop) >= 0
                    ):
                        ending = "stop"
                    if ending is not None:
                        if rank < K:  # an ending that ranks among the best K candidates
                            ended[b].append(self._ended(job, ids, s, t + 1, ending))
                        continue
                    index[b * K + live], tokens[b * K + live] = beam, token
                    live_scores[b, live] = s
                    live += 1
                    if live == K:
                        break
                done[b] = live == 0 or self._finished(ended[b], live_scores[b, 0].item(), t + 1)
                last = t == job.max_new_tokens - 1  # then the live beams end at "length"
                if not (done[b] or last) and job.overflow == "stop" and decoder.full(b * K):
                    self._end_live(
                        job, ended[b], live_scores[b], history, index, tokens, b, "context"
                    )
                    done[b] = True
            if all(done) or t == job.max_new_tokens - 1:
                break
            scores = live_scores.to(scores.device)
            decoder.reorder(torch.tensor(index, device=scores.device))
            logits = decoder.step(torch.tensor(tokens, device=scores.device))
        completions = []
        for b in range(B):
            if not done[b]:  # live beams end at the length limit
                self._end_live(job, ended[b], live_scores[b], history, index, tokens, b, "length")
            best = sorted(ended[b], key=lambda c: c.score, reverse=True)[: self.num_return]
            completions.append(Completion(best[0].ids, best[0].text, best[0].finish_reason,
                                          best[0].score, best))  # fmt: skip
            if job.stream and best[0].text:
                yield Piece(b, best[0].text)
        return completions

    def _ended(self, job: Job, ids: list[int], logp_sum: float, length: int, reason: str):
        """A finished hypothesis: without its eos, or cut before its stop string."""
        score = self._score(logp_sum, length)
        if reason == "eos":
            ids = ids[:-1]
        text = job.decode(ids) if job.decode else None
        if reason == "stop":
            text = text[: stop_position(text, job.stop)]
            ids = before_stop(ids, job.decode, len(text))
        return Completion(list(ids), text, reason, score)

    def _end_live(self, job, ended, live_scores, history, index, tokens, b, reason) -> None:
        """Prompt b's live beams (parents `index`, next `tokens`) end, each `reason`."""
        K = self.num_beams
        for k, s in enumerate(live_scores.tolist()):
            if math.isfinite(s):
                row = b * K + k
                ids = history[index[row]] + [tokens[row]]
                ended.append(self._ended(job, ids, s, len(ids), reason))

    def _finished(self, ended: list[Completion], best_live: float, length: int) -> bool:
        """No live beam can enter the K best ended hypotheses any more."""
        if len(ended) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        worst = sorted(c.score for c in ended)[-self.num_beams]
        return worst >= self._score(best_live, length)
