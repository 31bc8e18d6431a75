"""Built-in NIMA training objectives, registered through the `nima` entry-point group."""

from nima import hookimpl
from nima.train.objectives import CausalLM, MaskedLM
from nima.train.seq2seq import Seq2SeqObjective


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in objectives (gin: train.objective = @objective.masked_lm())."""
    registry.objective("causal_lm", CausalLM)
    registry.objective("masked_lm", MaskedLM)
    registry.objective("seq2seq", Seq2SeqObjective)
