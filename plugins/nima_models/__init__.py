"""Built-in NIMA model plugins, registered through the `nima` entry-point group."""

from nima import hookimpl
from nima.models.bert import BERT
from nima.models.gpt import GPT
from nima.models.seq2seq import Seq2Seq


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in models (configured in gin by class name: GPT.n_layers = 4)."""
    registry.model("gpt", GPT, gin_name="GPT")
    registry.model("bert", BERT, gin_name="BERT")
    registry.model("seq2seq", Seq2Seq, gin_name="Seq2Seq")
