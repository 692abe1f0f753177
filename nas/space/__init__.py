"""Search spaces: the space YAML of SPEC section 5 and the architectures sampled from it.

    from nas.space import load_space
    space = load_space("spaces/ghost_yolo.yaml")
    arch = space.sample(trial, nc=80)          # an ordinary architecture dict for build_model

Modules: `leaves` (fixed / choices / ranges -> Optuna distributions), `schema` (allowed keys,
rules, cross-key checks), `space` (SearchSpace: sampling and replaying trials).
"""
from .leaves import Choice, Fixed, Range, parse_leaf
from .schema import parse_space
from .space import SearchSpace, load_space

__all__ = ["Choice", "Fixed", "Range", "SearchSpace", "load_space", "parse_leaf", "parse_space"]
