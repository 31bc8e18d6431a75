"""objective.seq2seq: source -> target pairs (question -> answer), teacher forcing.

A batch is (source, source_mask, target_in, target_out): sources right-padded (mask False at
padding), target_in = <sos> + target (what the decoder reads), target_out = target + <eos> (what
it predicts), padding there IGNORE_INDEX. Both sides are cut to the model's context_length.
Pairs come from a dataset with `samples() -> {split: [{"question": ..., "answer": ...}]}`
(dataset.techqa); random pairs each step from a seeded generator, as the token windows of
causal_lm. At the end of a run, `report` decodes the held-out questions greedily (the
generation engine, through the model's `conditioned` decoder) and scores them: exact match and
corpus chrF (nima.train.text_metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch

from nima.errors import ConfigError, DataError
from nima.models.seq2seq import source_window
from nima.train.objectives import IGNORE_INDEX, next_token_loss, scored, token_accuracy
from nima.train.text_metrics import corpus_chrf, exact_match
from nima.validation import Range, checked

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class Pairs:
    """One split's pairs as token ids, the texts they came from, and the special ids."""

    sources: list[list[int]]
    targets: list[list[int]]
    texts: list[tuple[str, str]]
    pad_id: int
    sos_id: int
    eos_id: int


def collate(pairs: Pairs, index: list[int], context: int, device) -> Batch:
    """The batch of pairs[index]: padded sources and mask, target_in and target_out."""
    sources = [source_window(pairs.sources[i], context) for i in index]
    targets = [pairs.targets[i][: context - 1] for i in index]
    B, S, T = len(index), max(map(len, sources)), max(map(len, targets)) + 1
    source = torch.full((B, S), pairs.pad_id, dtype=torch.long)
    target_in = torch.full((B, T), pairs.pad_id, dtype=torch.long)
    target_out = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    for row, (src, tgt) in enumerate(zip(sources, targets, strict=True)):
        source[row, : len(src)] = torch.tensor(src)
        target_in[row, : len(tgt) + 1] = torch.tensor([pairs.sos_id, *tgt])
        target_out[row, : len(tgt) + 1] = torch.tensor([*tgt, pairs.eos_id])
    mask = torch.arange(S)[None, :] < torch.tensor([len(s) for s in sources])[:, None]
    return source.to(device), mask.to(device), target_in.to(device), target_out.to(device)


class PairBatches:
    """Random pairs of one split, from a seeded generator (the Batches interface: next,
    next_step, generator)."""

    def __init__(self, pairs: Pairs, context: int, batch_size: int, seed: int, device,
                 accumulation: int = 1, world: int = 1, rank: int = 0) -> None:  # fmt: skip
        if not pairs.sources:
            raise DataError("a split with no (question, answer) pairs cannot be batched")
        self.pairs, self.context, self.batch_size, self.device = pairs, context, batch_size, device
        self.accumulation, self.world, self.rank = accumulation, world, rank
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self, n: int) -> torch.Tensor:
        return torch.randint(len(self.pairs.sources), (n,), generator=self.generator)

    def next(self) -> Batch:
        return collate(self.pairs, self.draw(self.batch_size).tolist(), self.context, self.device)

    def next_step(self) -> list[Batch]:
        """This process's micro-batches of the next optimizer step."""
        index = self.draw(self.batch_size * self.accumulation * self.world)
        shares = index.view(self.world, self.accumulation, self.batch_size)[self.rank]
        return [collate(self.pairs, s.tolist(), self.context, self.device) for s in shares]


@checked
class Seq2SeqObjective:
    """Teacher-forced question -> answer pairs, then exact match and chrF of greedy answers."""

    scores_every_token = False

    def __init__(
        self,
        source: str = "question",
        target: str = "answer",
        report_examples: Annotated[int, Range(ge=0)] = 100,  # held-out pairs decoded at the end
        max_new_tokens: Annotated[int, Range(ge=1)] = 256,
    ) -> None:
        self.source, self.target = source, target
        self.report_examples, self.max_new_tokens = report_examples, max_new_tokens

    def prepare(self, data: Any, dataset: Any = None) -> dict[str, Pairs]:
        tokenizer = data.tokenizer
        if not hasattr(dataset, "samples"):
            raise ConfigError(
                f"objective.seq2seq needs a dataset of pairs (samples() -> {{split: [{{"
                f"{self.source!r}: ..., {self.target!r}: ...}}]}}), e.g. dataset.techqa; "
                f"{type(dataset).__name__} has only text."
            )
        ids = {role: getattr(tokenizer, f"{role}_id") for role in ("pad", "sos", "eos")}
        if None in ids.values():
            lacking = [role for role, i in ids.items() if i is None]
            raise ConfigError(
                f"objective.seq2seq needs pad, sos and eos tokens; this tokenizer lacks "
                f"{', '.join(lacking)} (NIMA's char, word and bpe tokenizers have all three)."
            )
        out = {}
        for split, samples in dataset.samples().items():
            try:
                texts = [(s[self.source], s[self.target]) for s in samples]
            except KeyError as exc:
                raise DataError(f"a {split} sample has no field {exc}; its fields: "
                                f"{sorted(samples[0]) if samples else []}") from None  # fmt: skip
            out[split] = Pairs(
                [tokenizer.encode(q) for q, _ in texts],
                [tokenizer.encode(a) for _, a in texts],
                texts, ids["pad"], ids["sos"], ids["eos"],
            )  # fmt: skip
        return out

    def batches(self, pairs: Pairs, *, context: int, batch_size: int, seed: int, device,
                accumulation: int = 1, world: int = 1, rank: int = 0) -> PairBatches:  # fmt: skip
        return PairBatches(pairs, context, batch_size, seed, device, accumulation, world, rank)

    def full_split(
        self, pairs: Pairs, *, context: int, batch_size: int, device, seed: int = 0
    ) -> list[Batch]:
        """Every pair of the split, in order."""
        n = len(pairs.sources)
        return [
            collate(pairs, list(range(i, min(i + batch_size, n))), context, device)
            for i in range(0, n, batch_size)
        ]

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        source, mask, target_in, target_out = batch
        return next_token_loss(model(target_in, source=source, source_mask=mask), target_out)

    def measure(self, model: torch.nn.Module, batch: Batch) -> dict[str, tuple[float, int]]:
        source, mask, target_in, target_out = batch
        logits = model(target_in, source=source, source_mask=mask)
        n = scored(target_out)
        return {
            "loss": (next_token_loss(logits, target_out).item(), n),
            "accuracy": (token_accuracy(logits, target_out), n),  # next-token, teacher forced
        }

    def tokens(self, batch: Batch) -> int:
        """Positions read: source and decoder input, padding included (from shapes alone)."""
        return batch[0].numel() + batch[2].numel()

    def answer(self, model: Any, tokenizer: Any, questions: list[str]) -> list[str]:
        """Greedy answers to `questions`, decoded by the generation engine (cached)."""
        return decode(model, tokenizer, questions, self.max_new_tokens)

    def report(self, model: Any, tokenizer: Any, splits: dict[str, Pairs]) -> dict[str, float]:
        """Exact match and chrF of greedy answers to the first report_examples held-out
        questions (the test split, else val)."""
        split = "test" if "test" in splits else "val"
        pairs = splits[split].texts[: self.report_examples]
        if not pairs:
            return {}
        answers = self.answer(model, tokenizer, [q for q, _ in pairs])
        references = [a for _, a in pairs]
        return {
            f"{split}_exact_match": exact_match(answers, references),
            f"{split}_chrf": corpus_chrf(answers, references),
        }

    def sample(self, model: Any, tokenizer: Any, prompt: str, *args: Any, **kwargs: Any) -> str:
        """The model's greedy answer to the prompt."""
        return self.answer(model, tokenizer, [prompt])[0]


def decode(
    model: Any, tokenizer: Any, sources: list[str], max_new_tokens: int, batch_size: int = 32
) -> list[str]:
    """Each source's greedy output, decoded by the generation engine from <sos> until <eos>
    (nima.generate.seq2seq); the model's mode is kept."""
    import nima
    from nima.generate.seq2seq import EncoderDecoderLM

    was_training = model.training
    lm = EncoderDecoderLM(model, tokenizer)
    try:
        return [
            completion.text
            for start in range(0, len(sources), batch_size)
            for completion in lm.generate(
                sources[start : start + batch_size],
                max_new_tokens,
                [nima.get("sampler", "greedy")()],
            )  # fmt: skip
        ]
    finally:
        model.train(was_training)
