"""Objectives as a family: BERT's masking statistics, evaluation weighted by scored targets,
causal_lm's batches as before, and bad objective settings refused before building."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import nima
from nima import config
from nima.errors import ConfigError
from nima.hooks import reset
from nima.train.batches import Batches
from nima.train.objectives import (
    IGNORE_INDEX,
    CausalLM,
    MaskedLM,
    evaluate_batches,
    mask_tokens,
    next_token_loss,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_family_is_registered() -> None:
    names = [e.name for e in nima.plugins("objective")]
    assert {"causal_lm", "masked_lm"} <= set(names)


def test_masking_selects_15_percent_and_splits_them_80_10_10() -> None:
    V, mask_id = 1000, 999
    ids = torch.randint(0, 998, (400, 250))  # 100k tokens, none of them the mask
    replacements = torch.arange(998)
    inputs, labels = mask_tokens(ids, mask_id, replacements, torch.Generator().manual_seed(0))
    selected = labels != IGNORE_INDEX
    n = int(selected.sum())
    # binomial(100k, 0.15): std 0.0011; 5 sigma
    assert abs(n / ids.numel() - 0.15) < 0.006
    assert torch.equal(labels[selected], ids[selected])  # labels are the original tokens
    assert torch.equal(inputs[~selected], ids[~selected])  # the rest is untouched
    masked = (inputs == mask_id) & selected
    kept = (inputs == ids) & selected
    random = selected & ~masked & ~kept  # a random token that happens to equal the original: kept
    assert abs(int(masked.sum()) / n - 0.8) < 0.015
    assert abs(int(random.sum()) / n - 0.1 * (1 - 1 / 998)) < 0.012
    assert abs(int(kept.sum()) / n - (0.1 + 0.1 / 998)) < 0.012
    assert not (inputs == mask_id)[~selected].any() and V > 998


def test_masking_is_repeatable_and_every_row_gets_a_target() -> None:
    ids = torch.randint(5, 50, (64, 3))  # 3 tokens a row: often none selected by chance
    args = (4, torch.arange(5, 50))
    a = mask_tokens(ids, *args, torch.Generator().manual_seed(3))
    b = mask_tokens(ids, *args, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert ((a[1] != IGNORE_INDEX).sum(dim=1) >= 1).all()


def test_causal_lm_batches_are_the_shifted_windows() -> None:
    ids = np.arange(100)
    objective = CausalLM()
    got = objective.batches(ids, context=8, batch_size=4, seed=7, device="cpu").next()
    want = Batches(ids, 8, 4, 7, "cpu").next()
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert torch.equal(got[0][:, 1:], got[1][:, :-1])


def char_with_mask() -> object:
    tokenizer = nima.get("tokenizer", "char")(special_tokens=["<mask>"])
    tokenizer.train("".join(map(chr, range(48, 123))))
    return tokenizer


def step_of(objective, split, *, world: int, accumulation: int, batch_size: int) -> list:
    """Every rank's micro-batches of one step, in rank order: (inputs, targets) of the step."""
    micro = [
        b
        for rank in range(world)
        for b in objective.batches(split, context=16, batch_size=batch_size, seed=7, device="cpu",
                                   accumulation=accumulation, world=world, rank=rank).next_step()
    ]  # fmt: skip
    return [torch.cat(parts) for parts in zip(*micro, strict=True)]


@pytest.mark.parametrize("make", [CausalLM, MaskedLM])
def test_a_step_is_the_same_however_it_is_split_into_ranks_and_micro_batches(make) -> None:
    """Batches' promise, masks included: world 2 x accumulation 2 x 2 windows == one batch of 8,
    and the two ranks train on different windows and masks."""
    data = SimpleNamespace(tokenizer=char_with_mask(), splits={"train": np.arange(4, 60).repeat(9)})
    split = make().prepare(data)["train"]
    one = step_of(make(), split, world=1, accumulation=1, batch_size=8)
    for world, accumulation, batch_size in [(2, 1, 4), (2, 2, 2), (1, 4, 2), (4, 1, 2)]:
        got = step_of(make(), split, world=world, accumulation=accumulation, batch_size=batch_size)
        assert all(torch.equal(g, w) for g, w in zip(got, one, strict=True)), (world, accumulation)
    ranks = step_of(make(), split, world=2, accumulation=1, batch_size=4)[1].view(2, 4, 16)
    assert not torch.equal(ranks[0], ranks[1])
    if make is MaskedLM:
        selected = ranks != IGNORE_INDEX  # (rank, B, context)
        assert not torch.equal(selected[0], selected[1])


class Fixed(torch.nn.Module):
    """Logits that put probability 1/2 on token 0 and spread the rest: a known loss per target."""

    def forward(self, idx, **_):
        logits = torch.zeros(*idx.shape, 4)
        logits[..., 0] = torch.log(torch.tensor(3.0))  # p(0) = 3/6 = 1/2, the others 1/6
        return logits


def test_evaluation_weighs_batches_by_scored_targets_not_their_size() -> None:
    # batch 1: 1 scored target, token 0 (loss ln 2); batch 2: 4 scored targets, token 1 (ln 6)
    y1 = torch.tensor([[0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    y2 = torch.tensor([[1, 1, 1, 1]])
    batches = [(torch.zeros(1, 4, dtype=torch.long), y1), (torch.zeros(1, 4, dtype=torch.long), y2)]
    got = evaluate_batches(Fixed(), batches, MaskedLM())
    want = (np.log(2) + 4 * np.log(6)) / 5  # a numel weighting would give (ln 2 + ln 6) / 2
    assert got["loss"] == pytest.approx(want, rel=1e-6)
    assert got["accuracy"] == pytest.approx(1 / 5)


def test_masked_lm_needs_a_mask_token() -> None:
    from nima.data.tokens import PreparedData

    tokenizer = nima.get("tokenizer", "char")()
    tokenizer.train("abc")
    data = PreparedData({"train": np.array([5, 6])}, tokenizer)
    with pytest.raises(ConfigError, match=r"char.special_tokens = \['<mask>'\]"):
        MaskedLM().prepare(data)


def test_masked_lm_loss_is_over_the_masked_tokens_only() -> None:
    logits = torch.randn(2, 5, 7)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 4] = 3, 6

    class Model(torch.nn.Module):
        def forward(self, idx, **_):
            return logits

    loss = MaskedLM().loss(Model(), (torch.zeros(2, 5, dtype=torch.long), labels))
    want = -(logits[0, 1].log_softmax(-1)[3] + logits[1, 4].log_softmax(-1)[6]) / 2
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(loss, next_token_loss(logits, labels))


@pytest.mark.parametrize(
    ("binding", "message"),
    [
        ("objective.masked_lm.rate = 1.5", "rate"),
        ("objective.masked_lm.mask_fraction = -0.1", "mask_fraction"),
        ("train.objective = @objective.masked_lm", "instance"),
    ],
)
def test_bad_objective_bindings_are_refused_before_building(binding: str, message: str) -> None:
    bindings = ["train.objective = @objective.masked_lm()", binding]
    with pytest.raises(ConfigError, match=message):
        config.parse([ROOT / "experiments" / "bert.gin"], bindings, reset())


def test_fractions_over_one_are_refused() -> None:
    with pytest.raises(ConfigError, match="at most 1"):
        MaskedLM(mask_fraction=0.8, random_fraction=0.3)


ROOT_EXPERIMENTS = ROOT / "experiments"
TINY_FAMILIES = {
    "bert.gin": ["BERT.context_length = 16", "BERT.d_model = 16", "BERT.n_layers = 1",
                 "BERT.n_heads = 2"],
    "seq2seq.gin": ["Seq2Seq.context_length = 24", "Seq2Seq.d_model = 16", "Seq2Seq.n_layers = 1",
                    "Seq2Seq.n_heads = 2", "Seq2Seq.dropout = 0.0", "bpe.vocab_size = 300",
                    "objective.seq2seq.report_examples = 1",
                    "objective.seq2seq.max_new_tokens = 2"],
}  # fmt: skip


@pytest.mark.parametrize("experiment", sorted(TINY_FAMILIES))
def test_a_resumed_run_draws_the_same_masks_and_pairs(experiment: str, tmp_path) -> None:
    """Masks and pairs come from the checkpointed generator: stop at 4 + resume to 8 == 8."""
    from nima.train.run import run_experiment

    common = [*TINY_FAMILIES[experiment], "train.batch_size = 4", "train.eval_interval = 4",
              "train.eval_batches = 1", "train.log_interval = 1",
              "train.final_eval = 'batches'", "train.sample_prompt = 'a'"]  # fmt: skip
    gin = [ROOT_EXPERIMENTS / experiment]

    def losses(run_dir):
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
        return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in records]

    whole, part = tmp_path / "whole", tmp_path / "part"
    run_experiment(gin, [*common, "train.steps = 8"], reset(), run_dir=whole, show_progress=False)
    run_experiment(gin, [*common, "train.steps = 4"], reset(), run_dir=part, show_progress=False)
    run_experiment([], ["train.steps = 8"], reset(), resume=part, show_progress=False)
    assert losses(part) == losses(whole)
