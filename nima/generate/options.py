"""Decoding settings by name, as `nima generate`'s options, `nima chat`'s `/set` and
`m.generate(samplers={...})` give them, turned into a sampler chain and a strategy.

The chain applies them in a fixed order, as Hugging Face does: penalties first (they act on the
raw scores), then temperature, then the truncations (top_k, top_p, min_p, typical), then the
selector (greedy, or sampling). gin users write the chain themselves:
`generation.samplers = [@sampler.repetition_penalty(), @sampler.top_k()]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

import gin

from nima.contracts import Sampler
from nima.errors import ConfigError
from nima.generate.engine import Overflow
from nima.validation import Range

# the sampler settings in chain order, each named as the sampler plugin it builds (a setting left
# None is off); greedy, a selector, goes last when on
SAMPLER_ORDER = (
    "repetition_penalty", "frequency_penalty", "presence_penalty", "no_repeat_ngram",
    "temperature", "top_k", "top_p", "min_p", "typical",
)  # fmt: skip
STRATEGY_OPTIONS = ("num_beams", "length_penalty", "early_stopping", "num_return")
INTS = {"top_k", "no_repeat_ngram", "num_beams", "num_return", "lookahead"}
BOOLS = {"greedy", "early_stopping"}


@dataclass
class Decoding:
    """Every decoding setting by name; `chain()` and `build_strategy()` build the plugins."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    no_repeat_ngram: int | None = None
    greedy: bool = False
    strategy: str = "sample"
    num_beams: int = 4
    length_penalty: float = 1.0
    early_stopping: bool = False
    num_return: int = 1
    lookahead: int = 4  # speculative: draft tokens per verification
    draft: Any = field(default=None, repr=False)  # speculative: the draft model (not a /set)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "draft"]

    def set(self, name: str, text: str) -> None:
        """Set `name` from text ("off" turns a sampler off), checked by building the plugins."""
        if name not in self.names():
            raise ConfigError(f"no decoding setting {name!r}; settings: {', '.join(self.names())}")
        word = text.strip().lower()
        value: Any
        if name in SAMPLER_ORDER and word in ("off", "none"):
            value = None
        elif name in BOOLS:
            if word not in ("on", "off", "true", "false"):
                raise ConfigError(f"{name} takes on or off, got {text!r}")
            value = word in ("on", "true")
        elif name == "strategy":
            value = word
        else:
            try:
                value = int(word) if name in INTS else float(word)
            except ValueError:
                kind = "an integer" if name in INTS else "a number"
                raise ConfigError(f"{name} takes {kind} (or off), got {text!r}") from None
        old = getattr(self, name)
        setattr(self, name, value)
        try:  # a bad value is refused now, not at the next reply
            self.chain(), self.build_strategy()
        except Exception:
            setattr(self, name, old)
            raise

    def chain(self, registry: Any = None) -> list[Sampler]:
        """The sampler plugins these settings name, in chain order."""
        get = _getter("sampler", registry)
        samplers = [get(n)(getattr(self, n)) for n in SAMPLER_ORDER if getattr(self, n) is not None]
        if self.greedy:
            samplers.append(get("greedy")())
        return samplers

    def build_strategy(self, registry: Any = None) -> Any:
        get = _getter("strategy", registry)
        if self.strategy == "beam":
            return get("beam")(**{n: getattr(self, n) for n in STRATEGY_OPTIONS})
        if self.strategy == "speculative":
            return get("speculative")(draft=self.draft, lookahead=self.lookahead)
        return get(self.strategy)()

    def describe(self) -> str:
        on = [f"{n}={getattr(self, n)}" for n in SAMPLER_ORDER if getattr(self, n) is not None]
        on += ["greedy"] * self.greedy
        strategy = self.strategy
        if strategy == "beam":
            strategy += "(" + ", ".join(f"{n}={getattr(self, n)}" for n in STRATEGY_OPTIONS) + ")"
        return (
            f"samplers: {', '.join(on) or 'none (sampling at temperature 1)'}; strategy: {strategy}"
        )


def _getter(family: str, registry: Any):
    if registry is not None:
        return registry.get
    from nima.hooks import system

    return system().registries[family].get


def samplers_from(value: Any) -> list[Sampler]:
    """A sampler list from instances, or from a mapping of settings ({"top_k": 40, ...})."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        decoding = Decoding()
        for name, v in value.items():
            decoding.set(name, "off" if v is None else str(v))
        return decoding.chain()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(
            f"samplers takes a list of sampler instances or a dict of settings, got {value!r}"
        )
    return list(value)


def strategy_from(value: Any) -> Any:
    """A strategy instance from an instance, a registered name, or None (sample)."""
    if value is None or isinstance(value, str):
        from nima.hooks import system

        return system().registries["strategy"].get(value or "sample")()
    if not callable(value):
        raise ConfigError(f"strategy takes a strategy instance or a name, got {value!r}")
    return value


@dataclass
class GenerationSettings:
    """The `generation` gin configurable: what `nima generate --config FILE` reads."""

    samplers: list[Sampler] | None = None  # instances: [@sampler.top_k(), @sampler.greedy()]
    strategy: Any = None  # instance: @strategy.beam()
    max_new_tokens: Annotated[int, Range(ge=1)] | None = None
    stop: list[str] = field(default_factory=list)
    seed: Annotated[int, Range(ge=0)] | None = None
    overflow: Overflow | None = None


gin.register("generation", module="nima")(GenerationSettings)
