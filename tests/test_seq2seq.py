"""The encoder-decoder: cross-attention over a padded source, causal decoder, cached decoding
through the generation engine (memory and its keys and values computed once), teacher-forced
batches, chrF against hand-checked and published values, and experiments/seq2seq.gin end to
end (val loss, exact match and chrF on held-out questions, `nima generate` answering)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import nima
from nima.cli import main
from nima.data.tokens import PreparedData
from nima.errors import ConfigError
from nima.generate import Job, SamplerChain, complete
from nima.hooks import reset
from nima.train.objectives import IGNORE_INDEX
from nima.train.run import run_experiment
from nima.train.seq2seq import Pairs, Seq2SeqObjective, collate
from nima.train.text_metrics import chrf, corpus_chrf, exact_match

SEQ2SEQ_GIN = Path(__file__).resolve().parents[1] / "experiments" / "seq2seq.gin"


def seq2seq(positional: str = "rope", **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return nima.get("model", "seq2seq")(
        vocab_size=31, context_length=24, d_model=32, n_layers=2, n_heads=4,
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", positional),
        **options,
    ).eval()  # fmt: skip


def padded_source() -> tuple[torch.Tensor, torch.Tensor]:
    source = torch.randint(31, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False  # the second source has 4 tokens
    return source, mask


# --- chrF -------------------------------------------------------------------------------------


def test_chrf_by_hand() -> None:
    # "ab" vs "abc": 1-grams P 2/2 R 2/3, 2-grams P 1/1 R 1/2, no 3-grams in "ab" (left out);
    # P = 1, R = 7/12, F2 = 5 P R / (4 P + R) = (35/12) / (55/12) = 7/11
    assert chrf("ab", "abc") == pytest.approx(700 / 11)
    assert chrf("a b", "ab c") == pytest.approx(700 / 11)  # whitespace is not scored
    assert chrf("same text", "same text") == pytest.approx(100)
    assert chrf("xyz", "abc") == 0.0 and chrf("", "abc") == 0.0


def test_chrf_matches_sacrebleus_published_scores() -> None:
    """The examples of the Hugging Face chrF metric card (computed there by sacreBLEU)."""
    hyp = ["The relationship between Obama and Netanyahu is not exactly friendly."]
    ref = ["The ties between Obama and Netanyahu are not particularly friendly."]
    assert corpus_chrf(hyp, ref) == pytest.approx(61.576379378113785, abs=1e-9)
    hyps = ["The relationship between cats and dogs is not exactly friendly.",
            "a good bookshop is just a genteel black hole that knows how to read."]  # fmt: skip
    refs = ["The relationship between dogs and cats is not exactly friendly.",
            "A good bookshop is just a genteel Black Hole that knows how to read."]  # fmt: skip
    assert corpus_chrf(hyps, refs) == pytest.approx(84.64214891738334, abs=1e-9)


def test_exact_match() -> None:
    assert exact_match(["a b ", "c"], ["a b", "d"]) == 0.5


# --- the model --------------------------------------------------------------------------------


def test_the_decoder_reads_the_source_but_not_its_padding_nor_its_own_future() -> None:
    model = seq2seq()
    source, mask = padded_source()
    target = torch.randint(31, (2, 5))  # Nq = 5 queries over Nk = 7 source keys
    logits = model(target, source=source, source_mask=mask)
    assert logits.shape == (2, 5, 31)
    other_padding = source.clone()
    other_padding[1, 4:] = (source[1, 4:] + 3) % 31
    torch.testing.assert_close(model(target, source=other_padding, source_mask=mask), logits)
    other_source = source.clone()
    other_source[:, 0] = (source[:, 0] + 1) % 31
    assert not torch.allclose(model(target, source=other_source, source_mask=mask), logits)
    future = target.clone()
    future[:, -1] = (target[:, -1] + 1) % 31
    changed = model(future, source=source, source_mask=mask)
    torch.testing.assert_close(changed[:, :-1], logits[:, :-1])


@pytest.mark.parametrize("positional", ["rope", "learned", "alibi", "sinusoidal", "none"])
def test_cached_decoding_matches_the_full_forward(positional: str) -> None:
    model = seq2seq(positional)
    source, mask = padded_source()
    target = torch.randint(31, (2, 9))
    full = model(target, source=source, source_mask=mask)
    decoder = model.conditioned(source, mask)
    cache = decoder.new_cache(2)
    steps = [decoder(target[:, :4], cache=cache)]  # prefill 4, then one token at a time
    steps += [decoder(target[:, i : i + 1], cache=cache) for i in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_the_engine_encodes_once_and_projects_the_memory_once(monkeypatch) -> None:
    model = seq2seq()
    source, mask = padded_source()
    calls = {"encode": 0, "kv": 0}
    encode = model.encode

    def counting_encode(*args, **kwargs):
        calls["encode"] += 1
        return encode(*args, **kwargs)

    monkeypatch.setattr(model, "encode", counting_encode)
    for block in model.decoder.blocks:
        block.cross.kv.register_forward_hook(lambda *_: calls.__setitem__("kv", calls["kv"] + 1))
    decoder = model.conditioned(source, mask)
    greedy = SamplerChain([nima.get("sampler", "greedy")()])
    job = Job([[1], [1]], 6, greedy)
    out = complete(decoder, job)
    assert calls == {"encode": 1, "kv": len(model.decoder.blocks)}
    # the same tokens as a greedy loop over full forwards
    idx = torch.ones(2, 1, dtype=torch.long)
    for _ in range(6):
        nxt = model(idx, source=source, source_mask=mask)[:, -1].argmax(-1)
        idx = torch.cat([idx, nxt[:, None]], dim=1)
    assert [c.ids for c in out] == idx[:, 1:].tolist()


def test_beam_search_reorders_the_memory_with_the_rows() -> None:
    model = seq2seq()
    source, mask = padded_source()
    beam = nima.get("strategy", "beam")(num_beams=3, num_return=2)
    out = complete(model.conditioned(source, mask), Job([[1], [1]], 5), beam)
    assert len(out) == 2 and all(len(c.n_best) == 2 for c in out)
    for row, length in enumerate([7, 4]):  # each source alone, unpadded: the same beams
        alone = complete(model.conditioned(source[row : row + 1, :length]), Job([[1]], 5), beam)
        assert [c.ids for c in alone[0].n_best] == [c.ids for c in out[row].n_best]


def test_a_decoder_needs_its_memory() -> None:
    with pytest.raises(ConfigError, match="source="):
        seq2seq()(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="memory"):
        seq2seq().new_cache(2)


# --- the objective ----------------------------------------------------------------------------


def test_teacher_forcing_batches() -> None:
    pairs = Pairs([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], [], pad_id=0, sos_id=2, eos_id=3)
    source, mask, target_in, target_out = collate(pairs, [0, 1], context=8, device="cpu")
    assert source.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    assert target_in.tolist() == [[2, 9, 10, 0], [2, 11, 12, 13]]
    X = IGNORE_INDEX
    assert target_out.tolist() == [[9, 10, 3, X], [11, 12, 13, 3]]
    # cut to the context: the decoder reads at most context tokens, <sos> included
    source, _, target_in, target_out = collate(pairs, [1], context=2, device="cpu")
    assert target_in.tolist() == [[2, 11]] and target_out.tolist() == [[11, 3]]


def test_a_long_question_is_cut_alike_in_training_and_when_answering(monkeypatch) -> None:
    """The encoder reads the same tokens of a question longer than the context in a training
    batch and when the generation engine answers it (source_window: its first context)."""
    from nima.generate.seq2seq import EncoderDecoderLM

    tokenizer = nima.get("tokenizer", "char")()
    tokenizer.train("abcdefghijklmnopqrstuvwxyz ?")
    model = nima.get("model", "seq2seq")(
        vocab_size=tokenizer.vocab_size, context_length=8, d_model=16, n_layers=1, n_heads=2,
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "learned"),
    ).eval()  # fmt: skip
    question = "why is the sky blue at noon?"  # 28 tokens, context 8
    ids = tokenizer.encode(question)
    pairs = Pairs([ids], [ids[:3]], [], tokenizer.pad_id, tokenizer.sos_id, tokenizer.eos_id)
    trained_on = collate(pairs, [0], context=8, device="cpu")[0]
    seen = []
    conditioned = model.conditioned
    monkeypatch.setattr(model, "conditioned", lambda s, m=None: seen.append(s) or conditioned(s, m))
    EncoderDecoderLM(model, tokenizer).generate(question, max_new_tokens=1)
    assert trained_on.tolist() == [ids[:8]]
    assert seen[0].tolist() == trained_on.tolist()


def test_the_objective_needs_a_dataset_of_pairs() -> None:
    tokenizer = nima.get("tokenizer", "char")()
    tokenizer.train("abc")
    data = PreparedData({"train": np.array([5, 6])}, tokenizer)
    with pytest.raises(ConfigError, match="dataset.techqa"):
        Seq2SeqObjective().prepare(data, nima.get("dataset", "shakespeare_char")())


TINY = [
    "Seq2Seq.context_length = 48",
    "Seq2Seq.d_model = 32",
    "Seq2Seq.n_layers = 1",
    "Seq2Seq.n_heads = 4",
    "Seq2Seq.dropout = 0.0",
    "bpe.vocab_size = 300",
    "train.steps = 16",
    "train.batch_size = 8",
    "train.eval_interval = 8",
    "train.eval_batches = 2",
    "train.final_eval = 'batches'",
    "cosine.warmup_steps = 2",
    "adamw.lr = 1e-2",
    "objective.seq2seq.report_examples = 6",
    "objective.seq2seq.max_new_tokens = 8",
]


def test_seq2seq_gin_trains_reports_exact_match_and_chrf_and_answers(tmp_path, capsys) -> None:
    run_dir = tmp_path / "s2s"
    summary = run_experiment([SEQ2SEQ_GIN], TINY, reset(), run_dir=run_dir, show_progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [8, 16]
    assert evals[-1]["val_loss"] < np.log(300)  # it learned something
    assert 0 <= summary["test_chrf"] <= 100 and 0 <= summary["test_exact_match"] <= 1
    assert isinstance(summary["sample"], str)
    capsys.readouterr()
    question = "What does `json.dumps` do?"
    assert main(["generate", str(run_dir), "--prompt", question, "--max-new-tokens", "5",
                 "--greedy"]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith(question)
