"""The generation engine: cached decode equals re-reading the context, a left-padded batch equals
each prompt alone (fp32), per-row stops (eos, multi-token stop strings held back, max tokens,
a full window), beam search against exhaustive search, and the Python API."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nima
from nima.errors import ConfigError
from nima.generate import Job, SamplerChain, complete, generate, run
from nima.generate.api import LanguageModel
from nima.generate.engine import RowText, held_back

V = 23


def model(positional: str = "rope", context: int = 16, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return nima.get("model", "gpt")(
        vocab_size=V, context_length=context, d_model=32, n_layers=2, n_heads=4,
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", positional),
    ).eval()  # fmt: skip


def greedy() -> SamplerChain:
    return SamplerChain([nima.get("sampler", "greedy")()])


def ids_of(completions) -> list[list[int]]:
    return [c.ids for c in completions]


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [12, 13]]


@pytest.mark.parametrize("positional", ["rope", "learned", "alibi"])
@pytest.mark.parametrize("overflow", ["slide", "stop"])
def test_greedy_batch_equals_each_prompt_alone_and_the_uncached_loop(positional, overflow):
    m = model(positional)
    n = 8  # within the window: the uncached loop sees the same context
    batch = complete(m, Job(PROMPTS, n, greedy(), overflow=overflow))
    alone = [complete(m, Job([p], n, greedy(), overflow=overflow))[0] for p in PROMPTS]
    uncached = complete(m, Job(PROMPTS, n, greedy(), use_cache=False, overflow=overflow))
    assert ids_of(batch) == ids_of(alone) == ids_of(uncached)
    assert all(len(c.ids) == n and c.finish_reason == "length" for c in batch)


@settings(max_examples=10, deadline=None)
@given(  # MODEL's window is 16: prompts up to it, outputs past it
    st.lists(st.lists(st.integers(0, V - 1), min_size=1, max_size=16), min_size=1, max_size=4),
    st.integers(1, 20),
)
def test_batched_equals_one_by_one_for_any_prompts(prompts, n) -> None:
    m = MODEL
    batch = complete(m, Job(prompts, n, greedy(), overflow="stop"))
    alone = [complete(m, Job([p], n, greedy(), overflow="stop"))[0] for p in prompts]
    assert ids_of(batch) == ids_of(alone)
    assert [c.finish_reason for c in batch] == [c.finish_reason for c in alone]


MODEL = model()


def test_seeded_sampling_repeats_and_a_row_samples_as_alone() -> None:
    chain = SamplerChain([nima.get("sampler", "top_k")(8)])
    first = complete(MODEL, Job(PROMPTS, 10, chain, seed=5))
    assert ids_of(first) == ids_of(complete(MODEL, Job(PROMPTS, 10, chain, seed=5)))
    assert ids_of(first) != ids_of(complete(MODEL, Job(PROMPTS, 10, chain, seed=6)))
    for i, p in enumerate(PROMPTS):  # row i samples with seed + i
        assert complete(MODEL, Job([p], 10, chain, seed=5 + i))[0].ids == first[i].ids


def test_full_window_stops_or_slides() -> None:
    m = model("learned", context=16)
    stopped = complete(m, Job(PROMPTS, 40, greedy(), overflow="stop"))
    # each row ends when its own prompt + output fill the 16 positions
    assert [len(p) + len(c.ids) for p, c in zip(PROMPTS, stopped, strict=True)] == [17] * 4
    assert {c.finish_reason for c in stopped} == {"context"}
    slid = complete(m, Job(PROMPTS, 40, greedy(), overflow="slide"))  # learned positions: no
    assert all(len(c.ids) == 40 for c in slid)  # position past the table is ever used
    assert [c.ids[: 17 - len(p)] for p, c in zip(PROMPTS, slid, strict=True)] == ids_of(stopped)
    for positional in ("learned", "rope", "alibi"):  # a prompt filling the window, padded
        m2 = model(positional, context=16)
        edge = [[3] * 16, [1], [4, 5]]
        out = complete(m2, Job(edge, 30, greedy(), overflow="stop"))
        alone = [complete(m2, Job([p], 30, greedy(), overflow="stop"))[0] for p in edge]
        assert ids_of(out) == ids_of(alone)
        assert [len(p) + len(c.ids) for p, c in zip(edge, out, strict=True)] == [17] * 3
    with pytest.raises(ConfigError, match="does not fit the model's context of 16"):
        complete(m, Job([list(range(17))], 2, greedy(), overflow="stop"))
    long = complete(m, Job([[i % V for i in range(40)]], 5, greedy()))  # slides: the last 16
    assert long[0].ids == complete(m, Job([[i % V for i in range(24, 40)]], 5, greedy()))[0].ids


def test_each_row_stops_at_eos_without_it() -> None:
    free = complete(MODEL, Job(PROMPTS, 12, greedy()))
    eos = free[1].ids[3]  # a token row 1 produces at step 4
    out = complete(MODEL, Job(PROMPTS, 12, greedy(), eos_id=eos))
    for f, o in zip(free, out, strict=True):
        if eos in f.ids:
            cut = f.ids.index(eos)
            assert o.ids == f.ids[:cut] and o.finish_reason == "eos"
        else:
            assert o.ids == f.ids and o.finish_reason == "length"


def letters(ids: list[int]) -> str:
    return "".join(chr(ord("a") + i) for i in ids)


def test_stop_strings_spanning_tokens_are_held_back_until_ruled_out() -> None:
    free = complete(MODEL, Job(PROMPTS, 12, greedy(), decode=letters))
    text = free[0].text
    stop = text[4:7]  # three tokens' worth, inside the output
    job = Job(PROMPTS, 12, greedy(), decode=letters, stop=[stop], stream=True)
    steps, pieces = run(MODEL, job), {}
    try:
        while True:
            piece = next(steps)
            pieces[piece.row] = pieces.get(piece.row, "") + piece.text
            assert stop not in pieces[piece.row]  # never shown, not even in part at the end
    except StopIteration as end:
        out = end.value
    first = text.find(stop)
    assert out[0].text == text[:first] and out[0].finish_reason == "stop"
    assert letters(out[0].ids) == text[:first]
    assert all(pieces.get(i, "") == c.text for i, c in enumerate(out))


def test_held_back_text_is_a_possible_stop_prefix() -> None:
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello", ["world"]) == 0
    assert held_back("ab\ufffd", []) == 1  # half a character
    job = Job([[1]], 3, decode=letters, stop=["cd"], stream=True)
    row = RowText(job)
    assert row.add(1) == "b" and row.add(2) == "" and row.add(4) == "ce"  # "c" was held back


def exhaustive_best(m, prompt: list[int], n: int, length_penalty: float):
    """Every continuation of n tokens, scored as beam search scores: the best one."""
    tails = torch.tensor(list(itertools.product(range(V), repeat=n)))  # (V**n, n)
    ids = torch.cat([torch.tensor(prompt).expand(len(tails), -1), tails], dim=1)
    logp = m(ids).log_softmax(-1)[:, len(prompt) - 1 : -1]  # (V**n, n, V)
    scores = logp.gather(2, tails[:, :, None]).sum((1, 2)) / n**length_penalty
    best = scores.argmax().item()
    return tails[best].tolist(), scores[best].item()


@pytest.mark.parametrize("length_penalty", [1.0, 0.0])
def test_beam_with_enough_beams_is_exhaustive_search(length_penalty: float) -> None:
    beam = nima.get("strategy", "beam")(num_beams=V, length_penalty=length_penalty, num_return=3)
    prompts = [[1, 2, 3], [7]]
    with torch.no_grad():
        out = complete(MODEL, Job(prompts, 2, SamplerChain()), beam)
        for p, c in zip(prompts, out, strict=True):
            ids, score = exhaustive_best(MODEL, p, 2, length_penalty)
            assert c.ids == ids and c.score == pytest.approx(score, abs=1e-5)
            scores = [h.score for h in c.n_best]
            assert len(scores) == 3 and scores == sorted(scores, reverse=True)


def test_beam_of_one_is_greedy_and_batched_beam_is_one_by_one() -> None:
    one = nima.get("strategy", "beam")(num_beams=1)
    assert ids_of(complete(MODEL, Job(PROMPTS, 6, SamplerChain()), one)) == ids_of(
        complete(MODEL, Job(PROMPTS, 6, greedy()))
    )
    four = nima.get("strategy", "beam")(num_beams=4, num_return=2)
    batch = complete(MODEL, Job(PROMPTS, 6, SamplerChain()), four)
    alone = [complete(MODEL, Job([p], 6, SamplerChain()), four)[0] for p in PROMPTS]
    assert [[h.ids for h in c.n_best] for c in batch] == [[h.ids for h in c.n_best] for c in alone]


def test_beam_ends_hypotheses_at_eos_and_stop_strings() -> None:
    four = nima.get("strategy", "beam")(num_beams=4, early_stopping=True, num_return=4)
    free = complete(MODEL, Job(PROMPTS[:1], 6, SamplerChain()), four)[0]
    eos = free.ids[0]
    out = complete(MODEL, Job(PROMPTS[:1], 6, SamplerChain(), eos_id=eos), four)[0]
    assert all(eos not in h.ids for h in out.n_best)
    # scored by the sum of log p (length_penalty 0), ending at once beats any longer text
    short = nima.get("strategy", "beam")(num_beams=4, length_penalty=0.0, num_return=4)
    out = complete(MODEL, Job(PROMPTS[:1], 6, SamplerChain(), eos_id=eos), short)[0]
    assert out.finish_reason == "eos" and out.ids == []
    stop = letters(free.ids[1:3])
    out = complete(MODEL, Job(PROMPTS[:1], 6, SamplerChain(), decode=letters, stop=[stop]), four)
    assert all(stop not in h.text for h in out[0].n_best)
    with pytest.raises(ValueError, match="num_return=5 is more than num_beams=4"):
        nima.get("strategy", "beam")(num_beams=4, num_return=5)


def test_jobs_refuse_what_cannot_run() -> None:
    with pytest.raises(ConfigError, match="empty prompt"):
        Job([[1], []], 3)
    with pytest.raises(ConfigError, match="max_new_tokens must be an int >= 1, got 0"):
        Job([[1]], 0)
    with pytest.raises(ConfigError, match="max_new_tokens must be an int >= 1, got '5'"):
        Job([[1]], "5")
    with pytest.raises(ConfigError, match="need a decode function"):
        Job([[1]], 2, stop=["x"])
    for stop in ([""], [1], "x"):  # an empty stop string would end every row at once
        with pytest.raises(ConfigError, match="stop must be a list of non-empty strings"):
            Job([[1]], 2, stop=stop, decode=letters)
    for seed in ("a", -1, 1.5, True):
        with pytest.raises(ConfigError, match="seed must be an int >= 0"):
            Job([[1]], 2, seed=seed)
    with pytest.raises(ConfigError, match="overflow must be 'slide' .* or 'stop'"):
        Job([[1]], 2, overflow="bogus")


def test_generate_keeps_the_callers_mode_and_grad() -> None:
    m = model().train()
    out = generate(m, torch.tensor([[1, 2], [3, 4]]), 3, greedy())
    assert out.shape == (2, 5) and m.training and torch.is_grad_enabled()


def test_generate_draws_its_seed_from_the_generator() -> None:
    idx, chain = torch.tensor([[1, 2], [3, 4]]), SamplerChain()
    g = torch.Generator().manual_seed(0)
    first, second = generate(MODEL, idx, 12, chain, g), generate(MODEL, idx, 12, chain, g)
    assert not torch.equal(first, second)  # the generator advanced
    again = generate(MODEL, idx, 12, chain, torch.Generator().manual_seed(0))
    assert torch.equal(first, again)


def test_an_encoder_decoder_streams_its_completion_and_checks_prompts() -> None:
    from nima.generate.seq2seq import EncoderDecoderLM

    tokenizer = nima.get("tokenizer", "char")()
    tokenizer.train("abcdefgh ")
    torch.manual_seed(0)
    model = nima.get("model", "seq2seq")(
        vocab_size=tokenizer.vocab_size, context_length=8, d_model=16, n_layers=1, n_heads=2,
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope"),
    ).eval()  # fmt: skip
    lm = EncoderDecoderLM(model, tokenizer)
    out = lm.generate("abc", 5, samplers={"greedy": True}, ignore_eos=True)
    pieces, text = lm.stream("abc", 5, samplers={"greedy": True}, ignore_eos=True), ""
    try:
        while True:
            text += next(pieces)
    except StopIteration as end:
        streamed = end.value
    assert streamed.ids == out.ids and streamed.text == text == out.text
    assert streamed.finish_reason == out.finish_reason
    with pytest.raises(ConfigError, match="prompts must be a string or a list of strings"):
        lm.generate([b"abc"], 3)


class Letters:
    """A tokenizer of the letters a..w (ids 0..22); id 22 ('w') is eos."""

    eos_id = 22

    def encode(self, text: str) -> list[int]:
        return [ord(c) - ord("a") for c in text]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return letters([i for i in ids if not (skip_special_tokens and i == self.eos_id)])


def test_language_model_generates_texts_and_streams_the_same() -> None:
    lm = LanguageModel(MODEL, Letters())
    one = lm.generate("abc", 10, samplers={"top_k": 5, "temperature": 0.8}, seed=3)
    assert one.text == letters(one.ids) and one.finish_reason in ("length", "eos")
    many = lm.generate(["abc", "de"], 10, samplers={"top_k": 5, "temperature": 0.8}, seed=3)
    assert many[0].ids == one.ids
    streamed = "".join(lm.stream("abc", 10, samplers={"top_k": 5, "temperature": 0.8}, seed=3))
    assert streamed == one.text
    beam = lm.generate("abc", 5, strategy="beam", ignore_eos=True)
    assert beam.n_best and len(beam.ids) == 5
    with pytest.raises(ConfigError, match="no decoding setting 'top_q'"):
        lm.generate("abc", 3, samplers={"top_q": 3})
    with pytest.raises(nima.errors.UnknownPluginError, match="Unknown strategy plugin 'bean'"):
        lm.generate("abc", 3, strategy="bean")
    for bad in (123, ["abc", 4], None):
        with pytest.raises(ConfigError, match="prompts must be a string or a list of strings"):
            lm.generate(bad, 3)


def test_speculative_greedy_is_the_models_greedy_output() -> None:
    b = complete(MODEL, Job(PROMPTS, 14, greedy(), overflow="stop"))  # some rows hit the window
    for draft, k in ((model(seed=1), 4), (MODEL, 3)):  # a different draft; the model itself
        spec = nima.get("strategy", "speculative")(draft=draft, lookahead=k)
        a = complete(MODEL, Job(PROMPTS, 14, greedy(), overflow="stop"), spec)
        assert ids_of(a) == ids_of(b)
        assert [c.finish_reason for c in a] == [c.finish_reason for c in b]
    with pytest.raises(ConfigError, match="needs a draft model"):
        nima.get("strategy", "speculative")()

    class MyGreedy(type(nima.get("sampler", "greedy")())):  # a subclass is still greedy
        pass

    spec = nima.get("strategy", "speculative")(draft=model(seed=1), lookahead=2)
    mine = complete(MODEL, Job(PROMPTS, 14, SamplerChain([MyGreedy()]), overflow="stop"), spec)
    assert ids_of(mine) == ids_of(b)


def test_speculative_acceptance_keeps_the_models_distribution() -> None:
    """Draft x ~ q, kept with probability min(1, p/q), else resampled from max(0, p - q): the
    token that comes out is distributed as p (checked on 4000 draws, q far from p)."""
    from nima_samplers.speculative import Speculative

    g = torch.Generator().manual_seed(0)
    p, q = torch.tensor([0.5, 0.3, 0.15, 0.05]), torch.tensor([0.1, 0.1, 0.2, 0.6])
    counts = torch.zeros(4)
    for _ in range(4000):
        x = int(torch.multinomial(q, 1, generator=g))
        kept, extra = Speculative._verify([x], [p, p], [q], False, g)
        counts[x if kept else extra] += 1
    assert (counts / 4000 - p).abs().max() < 0.035, counts / 4000  # 4.5 standard errors


def test_speculative_sampling_repeats_with_its_seed() -> None:
    spec = nima.get("strategy", "speculative")(draft=model(seed=1), lookahead=3)
    chain = SamplerChain([nima.get("sampler", "temperature")(0.5)])
    first = complete(MODEL, Job(PROMPTS[:2], 6, chain, seed=2), spec)
    assert ids_of(first) == ids_of(complete(MODEL, Job(PROMPTS[:2], 6, chain, seed=2), spec))
    assert all(len(c.ids) == 6 for c in first)


def test_cache_reorder_moves_the_cached_slots_in_place() -> None:
    m = model()
    cache = m.new_cache(3, 16)
    m(torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), cache=cache, last_only=True)
    before = [k.clone() for k in cache.keys], cache.positions.clone()
    buffers = [k.data_ptr() for k in cache.keys]
    index = torch.tensor([2, 2, 0])
    cache.reorder(index)
    assert [k.data_ptr() for k in cache.keys] == buffers  # no new max_len buffers
    for old, new in zip(before[0], cache.keys, strict=True):
        assert torch.equal(new[:, :, :3], old[:, :, :3].index_select(0, index))
    assert torch.equal(cache.positions[:, :3], before[1][:, :3].index_select(0, index))
    cache.reorder(torch.tensor([1, 0]))  # a new batch size: new buffers
    assert cache.batch_size == 2 and torch.equal(cache.keys[0][1, :, :3], before[0][0][2, :, :3])
