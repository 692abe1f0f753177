"""A search space: a validated space YAML that turns an Optuna trial into an architecture dict.

    space = load_space("spaces/ghost_yolo.yaml")
    arch = space.sample(trial, nc=80)              # define-by-run: trial.suggest_* per searched key
    arch == space.arch_from_params(trial.params, nc=80)

Parameters are named by key path ("imgsz", "stages.2.width", "neck.depth", "neck.width_p3").
Conditional ones are only asked for when they matter: `stages.i.dfc_kernel` and `neck.dfc_kernel`
when attention is on, `stages.i.scale` when branches > 0, so two trials with the same
architecture have the same parameters.
Candidates are plain architecture dicts made by `stage_backbone` and `pan_neck`.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Callable

import optuna

from nas.errors import UserError
from nas.models import pan_neck, stage_backbone
from nas.models.arch import read_yaml

from .leaves import Fixed, Leaf
from .schema import SE_RATIO, ParsedSpace, parse_space

CONDITIONAL = ("dfc_kernel", "scale")  # stage / neck keys asked for only when their condition holds

# pick(param name, leaf) -> value: the one thing that differs between sampling and replaying.
Pick = Callable[[str, Leaf], Any]


class SearchSpace:
    def __init__(self, parsed: ParsedSpace, name: str = "space", hash: str = ""):
        self.parsed = parsed
        self.name = name
        self.hash = hash
        self.description = parsed.description

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, hash={self.hash!r}, params={len(self.distributions(True))})"

    # --- turning choices into an architecture -------------------------------------------------

    def sample(self, trial: optuna.trial.BaseTrial, nc: int) -> dict:
        """Define-by-run: ask `trial` for every searched value; fixed values are not parameters."""
        return self._arch(lambda name, leaf: leaf.suggest(trial, name), nc)

    def arch_from_params(self, params: dict[str, Any], nc: int) -> dict:
        """The architecture a trial with these `params` (e.g. a stored `trial.params`) sampled.
        Parameters this space does not ask for are ignored; missing or out-of-space ones are refused."""
        def pick(name: str, leaf: Leaf) -> Any:
            if isinstance(leaf, Fixed):
                return leaf.value
            if name not in params:
                raise UserError(f"space {self.name}: parameter '{name}' is missing from the trial's params")
            value = params[name]
            if not leaf.contains(value):
                raise UserError(f"space {self.name}: parameter '{name}' = {value!r} is outside the space "
                                f"({leaf.distribution()})")
            return value
        return self._arch(pick, nc)

    def random_arch(self, seed: int | random.Random | None = None, nc: int = 80) -> dict:
        """One architecture drawn by Optuna's RandomSampler (for benchmarks and tests)."""
        seed = seed.randrange(2**31) if isinstance(seed, random.Random) else seed
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per draw
        try:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        finally:
            optuna.logging.set_verbosity(verbosity)
        return self.sample(study.ask(), nc)

    def _arch(self, pick: Pick, nc: int) -> dict:
        p = self.parsed
        imgsz = pick("imgsz", p.top["imgsz"])
        stem = pick("stem", p.top["stem"])
        stages = [self._stage(i, leaves, pick) for i, leaves in enumerate(p.stages)]
        last = pick("last", p.top["last"])
        neck = self._neck(p.sections["neck"], pick)
        head_width = pick("head.width", p.sections["head"]["width"])

        backbone, taps = stage_backbone(stem, stages, last)
        head = pan_neck(taps, len(backbone), neck["widths"], neck["depth"], head_width, ratio=neck["ratio"],
                        dfc=neck["dfc"], branches=neck["branches"])
        return {"nc": nc, "imgsz": imgsz, "backbone": backbone, "head": head}

    @staticmethod
    def _stage(i: int, leaves: dict[str, Leaf], pick: Pick) -> dict:
        """The `stage_backbone` stage dict; mid channels are make_divisible(width * expansion) there."""
        v = {k: pick(f"stages.{i}.{k}", leaf) for k, leaf in leaves.items() if k not in CONDITIONAL}
        dfc = pick(f"stages.{i}.dfc_kernel", leaves["dfc_kernel"]) if v["attention"] else 0
        scale = pick(f"stages.{i}.scale", leaves["scale"]) if v["branches"] > 0 else True  # unused at 0
        return dict(stride=v["stride"], depth=v["depth"], width=v["width"], expansion=v["expansion"],
                    kernel=v["kernel"], se=SE_RATIO if v["se"] else 0.0, ratio=v["ratio"], dfc=dfc,
                    branches=v["branches"], scale=scale)

    @staticmethod
    def _neck(leaves: dict[str, Leaf], pick: Pick) -> dict:
        """`pan_neck`'s arguments. The space has either `width` or `width_p3..p5` (see the schema)."""
        v = {k: pick(f"neck.{k}", leaf) for k, leaf in leaves.items() if k not in CONDITIONAL}
        widths = (v["width"],) * 3 if "width" in v else (v["width_p3"], v["width_p4"], v["width_p5"])
        dfc = pick("neck.dfc_kernel", leaves["dfc_kernel"]) if v["attention"] else 0
        return dict(widths=widths, depth=v["depth"], ratio=v["ratio"], dfc=dfc, branches=v["branches"])

    # --- describing the space -----------------------------------------------------------------

    def leaves(self) -> dict[str, Leaf]:
        """Every leaf by parameter name, in sampling order, fixed ones included."""
        p = self.parsed
        out = {"imgsz": p.top["imgsz"], "stem": p.top["stem"]}
        for i, stage in enumerate(p.stages):
            out.update({f"stages.{i}.{k}": leaf for k, leaf in stage.items()})
        out["last"] = p.top["last"]
        for section, leaves in p.sections.items():
            out.update({f"{section}.{k}": leaf for k, leaf in leaves.items()})
        return out

    def distributions(self, conditional: bool = False) -> dict[str, optuna.distributions.BaseDistribution]:
        """{parameter name: Optuna distribution} of the searched leaves; the conditional ones
        (dfc_kernel, scale) only with `conditional=True`."""
        return {name: leaf.distribution() for name, leaf in self.leaves().items()
                if not isinstance(leaf, Fixed) and (conditional or name.rsplit(".", 1)[-1] not in CONDITIONAL)}


def load_space(path: str | Path) -> SearchSpace:
    """A validated space from a YAML file; `UserError` naming the key path on any problem."""
    path = Path(path)
    parsed = parse_space(read_yaml(path), str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return SearchSpace(parsed, name=path.stem, hash=digest)
