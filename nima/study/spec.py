"""The study file: an experiment plus a `study` block that says what to vary.

```gin
include 'nima:smoke.gin'                  # the experiment every run starts from
train.steps = 200                         # ... changed as for any experiment

study.grid = {'GPT.positional': [@positional.rope, @positional.learned]}   # every combination
study.zipped = {'GPT.d_model': [32, 64], 'GPT.n_heads': [2, 4]}           # i-th values together
study.seeds = [1, 2, 3]
study.metric = 'final_val_loss'
study.baseline = 'rope'
study.launcher = @launcher.local
```

Each variant is one combination of axis values, named from them (`rope,d_model=32,n_heads=2`);
each variant runs once per seed (`train.seed`). The file is parsed like any experiment, so every
binding is checked before anything runs, and each variant's bindings are checked against the
experiment as `nima run --bind` would check them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import gin
import gin.config
from gin.config import ConfigurableReference

from nima import config
from nima.errors import ConfigError
from nima.hooks import PluginSystem
from nima.study.launch import Launcher
from nima.validation import Range

METRICS = {  # summary.json fields a study can compare: is lower better?
    "final_val_loss": True,
    "best_batches_val_loss": True,
    "val_bits_per_char": True,
    "tokens_per_s": False,
    "wall_s": True,
}
Metric = Literal["final_val_loss", "best_batches_val_loss", "val_bits_per_char", "tokens_per_s", "wall_s"]  # fmt: skip


@dataclass
class StudySettings:
    """The `study` configurable (gin: `study.grid = {...}`); see the module docstring."""

    grid: dict[str, list[Any]] = field(default_factory=dict)  # axes crossed with each other
    zipped: dict[str, list[Any]] = field(default_factory=dict)  # axes read together, one row each
    seeds: Sequence[Annotated[int, Range(ge=0)]] = (1, 2, 3)
    metric: Metric = "final_val_loss"
    baseline: str | None = None  # a variant's name; None: the first variant
    launcher: Callable[..., Launcher] | None = None  # factory: launcher(jobs=N); None: local
    jobs: Annotated[int, Range(ge=1)] = 1  # runs at a time (`nima ablate --jobs N` overrides)


gin.register("study", module="nima")(StudySettings)
STUDY_SELECTOR = "nima.study"


@dataclass(frozen=True)
class Variant:
    """One combination of axis values: its name and its gin lines."""

    name: str
    bindings: tuple[str, ...]  # e.g. ("GPT.positional = @positional.rope",)


@dataclass(frozen=True)
class Study:
    """A parsed, checked study: everything `nima ablate` needs to plan and start its runs."""

    file: Path
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    metric: str
    baseline: str
    experiment: str  # the gin text every run starts from (the study block left out)
    config: str  # the whole study as gin text, includes expanded: the study's operative config
    launcher: Callable[..., Launcher] | None
    jobs: int
    steps: int  # train.steps, for the progress display

    @property
    def lower_is_better(self) -> bool:
        return METRICS[self.metric]

    def plan(self) -> dict[str, Any]:
        """study.json: what `nima study report` needs, without parsing gin again."""
        return {
            "study_file": str(self.file),
            "metric": self.metric,
            "lower_is_better": self.lower_is_better,
            "baseline": self.baseline,
            "seeds": list(self.seeds),
            "steps": self.steps,
            "variants": [{"name": v.name, "bindings": list(v.bindings)} for v in self.variants],
        }


def load_study(file: str | Path, bindings: Sequence[str], system: PluginSystem) -> Study:
    """Parse and check a study file (and `--bind` lines); raise ConfigError naming what is wrong."""
    from nima.runs import configured_settings  # the experiment must be complete

    file = Path(file)
    config.parse([file], bindings, system)
    grid, zipped = _axes(file, "grid"), _axes(file, "zipped")
    if not grid and not zipped:
        raise ConfigError(
            f"{file} is not a study: it sets neither study.grid nor study.zipped. A study file "
            f"includes an experiment and names the bindings to vary, e.g. `include "
            f"'nima:gpt.gin'` and `study.grid = {{'GPT.positional': [@positional.rope, "
            f"@positional.learned]}}` (see experiments/ablations/positional.gin)."
        )
    settings = gin.get_configurable(StudySettings)()
    steps = configured_settings().steps
    whole = gin.config_str()
    experiment = gin.config._config_str(
        {k: v for k, v in gin.config._CONFIG.items() if not _is_study_selector(k[1])}, 80, 4
    )
    variants = _variants(file, grid, zipped)
    baseline = settings.baseline or variants[0].name
    names = [v.name for v in variants]
    if baseline not in names:
        raise ConfigError(
            f"{file}: study.baseline = {baseline!r} is not a variant of this study; its variants "
            f"are {', '.join(map(repr, names))}."
        )
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        raise ConfigError(
            f"{file}: study.seeds = {list(settings.seeds)} must list one or more distinct seeds, "
            f"e.g. `study.seeds = [1, 2, 3]`."
        )
    for variant in variants:  # each variant's lines, checked as `nima run --bind` checks them
        try:
            config.parse([file], [*bindings, *variant.bindings], system)
        except ConfigError as exc:
            raise ConfigError(f"{file}: variant {variant.name!r}: {exc}") from None
    return Study(
        file=file,
        variants=tuple(variants),
        seeds=tuple(settings.seeds),
        metric=settings.metric,
        baseline=baseline,
        experiment=experiment,
        config=whole,
        launcher=settings.launcher,
        jobs=settings.jobs,
        steps=steps,
    )


def _is_study_selector(selector: str) -> bool:
    return selector == STUDY_SELECTOR or selector.startswith("launcher.")


def _axes(file: Path, param: str) -> dict[str, list[Any]]:
    """`study.<param>` as written: references kept unevaluated, so they can be written back."""
    try:
        axes = gin.query_parameter(f"{STUDY_SELECTOR}.{param}")
    except ValueError:
        return {}
    example = "{'GPT.positional': [@positional.rope, @positional.learned]}"
    if not isinstance(axes, dict):
        raise ConfigError(
            f"{file}: study.{param} = {axes!r} is not valid: it takes a dict from a binding name "
            f"to the list of its values, e.g. `study.{param} = {example}`."
        )
    for name, values in axes.items():
        if not isinstance(name, str) or "." not in name:
            raise ConfigError(
                f"{file}: study.{param} has the key {name!r}, which is not a binding name; keys "
                f"are written `configurable.parameter`, as in `{example}`."
            )
        if name.endswith(".seed") and name.split(".")[-2] == "train":
            raise ConfigError(
                f"{file}: study.{param} varies train.seed; seeds come from study.seeds "
                f"(e.g. `study.seeds = [1, 2, 3]`), and every variant runs with each of them."
            )
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(
                f"{file}: study.{param}[{name!r}] = {values!r} is not valid: each axis takes a "
                f"non-empty list of values, as in `{example}`."
            )
    lengths = {len(values) for values in axes.values()}
    if param == "zipped" and len(lengths) > 1:
        sizes = ", ".join(f"{name}: {len(values)}" for name, values in axes.items())
        raise ConfigError(
            f"{file}: the lists of study.zipped must be of one length (their i-th values make "
            f"one variant); they have {sizes}. Put axes to cross in study.grid."
        )
    return axes


def _variants(file: Path, grid: dict[str, list], zipped: dict[str, list]) -> list[Variant]:
    """Every combination of the grid's values, crossed with each row of the zipped axes."""
    if both := sorted(set(grid) & set(zipped)):
        raise ConfigError(
            f"{file}: {', '.join(both)} is both in study.grid and in study.zipped; an axis "
            f"belongs to one of them."
        )
    rows = list(zip(*zipped.values(), strict=True)) or [()]
    variants = []
    for combination in itertools.product(*grid.values(), rows):
        pairs = [
            *zip(grid, combination[:-1], strict=True),
            *zip(zipped, combination[-1], strict=True),
        ]
        name = ",".join(_label(key, value) for key, value in pairs)
        variants.append(Variant(name, tuple(f"{key} = {value!r}" for key, value in pairs)))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(
            f"{file}: two variants would both be called {twice[0]!r}; variants are named from "
            f"their values (a plugin's name, else parameter=value), so give each axis distinct "
            f"values."
        )
    return variants


def _label(key: str, value: Any) -> str:
    """A value's part of a variant's name, usable in a folder name: `rope`, `d_model=64`."""
    if isinstance(value, ConfigurableReference):
        return value.selector.rsplit(".", 1)[-1]
    text = re.sub(r"[^\w.+-]", "-", re.sub(r"[\s'\"()\[\]{}]", "", str(value)))
    return f"{key.rsplit('.', 1)[-1]}={text}"
