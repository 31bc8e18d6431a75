"""Built-in samplers (logits processors and selectors) and decoding strategies, registered
through the `nima` entry-point group."""

from nima import hookimpl
from nima_samplers.samplers import (
    FrequencyPenalty,
    Greedy,
    MinP,
    NoRepeatNgram,
    PresencePenalty,
    RepetitionPenalty,
    Sample,
    Temperature,
    TopK,
    TopP,
    Typical,
)
from nima_samplers.speculative import Speculative
from nima_samplers.strategies import Beam, SampleStrategy

PROCESSORS = {
    "temperature": Temperature,
    "top_k": TopK,
    "top_p": TopP,
    "min_p": MinP,
    "typical": Typical,
    "repetition_penalty": RepetitionPenalty,
    "frequency_penalty": FrequencyPenalty,
    "presence_penalty": PresencePenalty,
    "no_repeat_ngram": NoRepeatNgram,
}


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in samplers and strategies."""
    for name, cls in PROCESSORS.items():
        # the rule is what nima.testing.samplers checks it against
        registry.sampler(name, cls, capabilities={"kind": "processor", "rule": name})
    registry.sampler("greedy", Greedy, capabilities={"kind": "selector", "rule": "greedy"})
    registry.sampler("sample", Sample, capabilities={"kind": "selector"})
    registry.strategy("sample", SampleStrategy)
    registry.strategy("beam", Beam)
    registry.strategy("speculative", Speculative)
