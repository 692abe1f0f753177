"""Search space YAML: parsing into Optuna distributions, sampling buildable architectures,
replaying stored params, conditional parameters, and refusals that name the key path."""
import copy
import hashlib
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from nas.errors import UserError
from nas.models import DFCAttention, RepConv, build_model, reparameterize
from nas.space import Choice, Fixed, Range, SearchSpace, load_space

from .helpers import randomize_bn

DEFAULT = Path(__file__).resolve().parents[1] / "spaces" / "ghost_yolo.yaml"
NC = 3

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return load_space(DEFAULT)


def random_trial(seed: int) -> optuna.Trial:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()


# A small valid space; each malformed case below changes one thing in it.
BASE = {
    "imgsz": 64,
    "stem": 8,
    "stages": [
        {"stride": 2, "depth": 1, "width": [8, 12]},
        {"stride": 2, "depth": {"low": 1, "high": 2}, "width": 16, "kernel": [3, 5],
         "branches": {"low": 0, "high": 2}, "scale": [False, True]},
        {"stride": 2, "depth": 1, "width": {"low": 16, "high": 32, "step": 8}, "attention": [False, True],
         "dfc_kernel": [3, 5], "se": [False, True]},
        {"stride": 2, "depth": 1, "width": 32, "expansion": {"low": 2.0, "high": 4.0, "step": 0.5},
         "ratio": [2, 3, 4]},
    ],
    "last": [32, 48],
    "neck": {"width": [16, 24], "depth": {"low": 1, "high": 2}},
    "head": {"width": 16},
}


def write_space(tmp_path: Path, raw, name: str = "space") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def changed(edit) -> dict:
    raw = copy.deepcopy(BASE)
    edit(raw)
    return raw


def test_default_space_loads_with_expected_distributions(space):
    assert space.name == "ghost_yolo"
    assert space.hash == hashlib.sha256(DEFAULT.read_bytes()).hexdigest()[:12]
    d = space.distributions()
    assert isinstance(d["stages.0.width"], optuna.distributions.CategoricalDistribution)
    assert isinstance(d["stages.1.depth"], optuna.distributions.IntDistribution)
    assert (d["stages.3.width"].low, d["stages.3.width"].high, d["stages.3.width"].step) == (40, 104, 8)
    assert isinstance(d["stages.4.expansion"], optuna.distributions.FloatDistribution)
    assert d["stages.4.expansion"].step == 0.5
    assert d["stages.2.se"].choices == (False, True)
    assert d["stages.5.ratio"].choices == (2, 3, 4)
    assert (d["stages.5.branches"].low, d["stages.5.branches"].high) == (0, 4)
    assert "neck.width" not in d and d["neck.width_p3"].low == 32 and max(d["neck.width_p5"].choices) >= 192
    assert d["neck.ratio"].choices == (2, 3, 4) and d["neck.attention"].choices == (False, True)
    assert (d["neck.branches"].low, d["neck.branches"].high) == (0, 4)
    # Fixed keys are not parameters; conditional ones only on request.
    assert "imgsz" not in d and "stages.0.stride" not in d and "stages.0.attention" not in d
    assert "stages.2.dfc_kernel" not in d and "stages.2.scale" not in d and "neck.dfc_kernel" not in d
    assert {"stages.2.dfc_kernel", "stages.2.scale", "neck.dfc_kernel"} <= set(space.distributions(conditional=True))
    assert space.leaves()["imgsz"] == Fixed(320)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_architectures_build_run_and_replay(space, seed):
    trial = random_trial(seed)
    arch = space.sample(trial, NC)
    assert set(arch) == {"nc", "imgsz", "backbone", "head"} and arch["imgsz"] == 320
    assert all(name in space.distributions(conditional=True) for name in trial.params)

    model = build_model(arch).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 64 + NC, 8, 8), (1, 64 + NC, 4, 4), (1, 64 + NC, 2, 2)]

    # Stored params give back the same dict, and the same dict the same model.
    replayed = space.arch_from_params(dict(trial.params), NC)
    assert replayed == arch
    again = build_model(replayed)
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_sampled_values_reach_the_rows(space):
    trial = random_trial(7)
    arch = space.sample(trial, NC)
    p = trial.params
    stage3 = arch["backbone"][4]  # row 0 is the stem, then one row per stage
    c_out, mid, k, stride, se, ratio, dfc, branches, scale = stage3[3]
    assert stage3[1] == p["stages.3.depth"] and c_out == p["stages.3.width"] and k == p["stages.3.kernel"]
    assert ratio == p["stages.3.ratio"] and branches == p["stages.3.branches"] and stride == 2
    assert se == (0.25 if p["stages.3.se"] else 0.0)
    assert mid >= 0.9 * p["stages.3.width"] * p["stages.3.expansion"]
    assert dfc == (p["stages.3.dfc_kernel"] if p["stages.3.attention"] else 0)
    assert arch["head"][-1][3] == ["nc", p["head.width"]]


def test_conditional_params_are_asked_only_when_they_matter(space):
    seen = set()
    for seed in range(25):
        trial = random_trial(seed)
        arch = space.sample(trial, NC)
        p = trial.params
        for i in range(len(space.parsed.stages)):
            attention = p.get(f"stages.{i}.attention", False)
            branches = p.get(f"stages.{i}.branches", 0)
            assert (f"stages.{i}.dfc_kernel" in p) == attention
            assert (f"stages.{i}.scale" in p) == (branches > 0)
            row = arch["backbone"][1 + i][3]
            assert row[8] is (p[f"stages.{i}.scale"] if branches else True)
            seen.update({("attention", attention), ("branches", branches > 0)})
    assert seen == {("attention", True), ("attention", False), ("branches", True), ("branches", False)}
    assert "stages.0.attention" not in space.distributions()  # stage 0 never gets DFC


def test_arch_from_params_refuses_missing_and_outside_values(space):
    trial = random_trial(3)
    space.sample(trial, NC)
    params = dict(trial.params)
    with pytest.raises(UserError, match="'stages.1.width' is missing"):
        space.arch_from_params({k: v for k, v in params.items() if k != "stages.1.width"}, NC)
    with pytest.raises(UserError, match="'stages.3.width' = 44 is outside the space"):
        space.arch_from_params({**params, "stages.3.width": 44}, NC)  # not on the step-8 grid
    with pytest.raises(UserError, match="'neck.width_p4' = 50 is outside"):
        space.arch_from_params({**params, "neck.width_p4": 50}, NC)
    with pytest.raises(UserError, match="'stages.2.se' = 1 is outside"):
        space.arch_from_params({**params, "stages.2.se": 1}, NC)  # 1 is not True here


def test_random_arch_is_reproducible(space):
    assert space.random_arch(5, NC) == space.random_arch(5, NC)
    assert space.random_arch(5, NC) != space.random_arch(6, NC)


def test_leaves_become_the_right_distributions(tmp_path):
    space = load_space(write_space(tmp_path, BASE, "small"))
    assert space.name == "small"
    leaves = space.leaves()
    assert leaves["stages.0.width"] == Choice((8, 12))
    assert leaves["stages.1.depth"] == Range(1, 2) and leaves["stages.1.depth"].is_int
    assert leaves["stages.3.expansion"] == Range(2.0, 4.0, 0.5) and not leaves["stages.3.expansion"].is_int
    assert leaves["stages.0.kernel"] == Fixed(3)  # default
    log = load_space(write_space(tmp_path, changed(lambda r: r["neck"].update(width={"low": 8, "high": 64,
                                                                                      "log": True}))))
    assert log.distributions()["neck.width"] == optuna.distributions.IntDistribution(8, 64, log=True)
    # The small space samples architectures that build.
    arch = space.sample(random_trial(0), NC)
    assert build_model(arch)(torch.rand(1, 3, 64, 64))[0].shape == (1, 64 + NC, 8, 8)


def _set(path: str, value):
    """An edit that sets a dotted key path ("stages.1.width") in the raw space."""
    def edit(raw):
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def _drop(path: str):
    def edit(raw):
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]
    return edit


def _neck(**keys):
    """An edit that replaces the whole neck section."""
    def edit(raw):
        raw["neck"] = keys
    return edit


MALFORMED = [
    ("width as a string", _set("stages.1.width", "64"), "stages[1].width: expected an int, got '64'"),
    ("bool where int", _set("stages.0.depth", True), "stages[0].depth: expected an int, got True"),
    ("empty choices", _set("stages.1.kernel", []), "stages[1].kernel: empty choice list"),
    ("low > high", _set("stages.2.width", {"low": 64, "high": 32}), "stages[2].width: low 64 > high 32"),
    ("step 0", _set("stages.1.depth", {"low": 1, "high": 3, "step": 0}), "stages[1].depth.step: must be > 0"),
    ("log with low 0", _set("neck.width", {"low": 0, "high": 64, "log": True}),
     "neck.width: a log range needs low > 0"),
    ("log with step", _set("neck.width", {"low": 8, "high": 64, "step": 8, "log": True}), "neck.width: log and step"),
    ("unknown top key", _set("neck_width", 64),
     "unknown key(s) ['neck_width']; allowed: description, imgsz, stem, stages, last, neck, head"),
    ("unknown stage key", _set("stages.1.widht", 16), "stages[1]: unknown key(s) ['widht']; allowed: stride, depth"),
    ("unknown range key", _set("stages.1.depth", {"low": 1, "high": 2, "steps": 1}),
     "stages[1].depth: unknown range key(s) ['steps']"),
    ("unknown neck key", _set("neck.dpeth", 1), "neck: unknown key(s) ['dpeth']"),
    ("missing width", _drop("stages.0.width"), "stages[0].width: missing"),
    ("missing neck", _drop("neck"), "neck: missing"),
    ("even kernel", _set("stages.1.kernel", [3, 4]), "stages[1].kernel: choice 1 must be an odd positive int, got 4"),
    ("even dfc kernel in range", _set("stages.2.dfc_kernel", {"low": 3, "high": 7}),
     "stages[2].dfc_kernel: range [3, 7] includes 4"),
    ("ratio 5", _set("stages.3.ratio", [2, 5]), "stages[3].ratio: choice 1 must be a Ghost ratio between 2 and 4"),
    ("branches 5", _set("stages.1.branches", {"low": 0, "high": 5}), "stages[1].branches: range [0, 5] includes 5"),
    ("expansion 0", _set("stages.0.expansion", 0), "stages[0].expansion: must be a number > 0, got 0"),
    ("depth 0", _set("stages.2.depth", 0), "stages[2].depth: must be an int >= 1, got 0"),
    ("stage not a mapping", _set("stages.1", [2, 1, 16]), "stages[1]: expected a mapping"),
    ("stages not a list", _set("stages", {"stride": 2}), "stages: expected a non-empty list"),
    ("strides miss 32", _set("stages.3.stride", 1), "stages: the stage strides must take"),
    ("searchable stride", _set("stages.0.stride", [1, 2]), "stages[0].stride: is fixed, not searchable"),
    ("imgsz not /32", _set("imgsz", [320, 300]), "imgsz: choice 1 must be a positive multiple of 32, got 300"),
    ("dfc kernel without attention", _set("stages.0.dfc_kernel", 3),
     "stages[0].dfc_kernel: has no effect because stages[0].attention is always false"),
    ("scale without branches", _set("stages.3.scale", False),
     "stages[3].scale: has no effect because stages[3].branches is always 0"),
    ("high off the step grid", _set("stages.2.width", {"low": 16, "high": 30, "step": 8}),
     "stages[2].width: high 30 is not low 16 plus a multiple of step 8"),
    ("float range for an int", _set("stages.2.width", {"low": 16.0, "high": 32.0}),
     "stages[2].width.low: expected an int, got 16.0"),
    ("choice twice", _set("neck.width", [16, 16]), "neck.width: choice 16 is listed twice"),
    ("range for a bool", _set("stages.2.se", {"low": 0, "high": 1}), "stages[2].se: a range needs numbers"),
    ("description not text", _set("description", ["a"]), "description: is fixed, not searchable"),
    # The neck: one width or three per-level widths, and the Ghost options with the stages' rules.
    ("neck width and per-level width", _set("neck.width_p4", 32),
     "neck.width_p4: cannot be combined with neck.width; give one width for every level"),
    ("neck per-level widths incomplete", _neck(width_p3=16, width_p4=24),
     "neck.width_p5: missing (per-level widths need all of width_p3, width_p4 and width_p5"),
    ("neck without any width", _drop("neck.width"), "neck.width: missing (required; give one width for every level"),
    ("neck per-level width 0", _neck(width_p3=16, width_p4=[24, 0], width_p5=32),
     "neck.width_p4: choice 1 must be a positive int, got 0"),
    ("neck per-level low > high", _neck(width_p3={"low": 32, "high": 16}, width_p4=24, width_p5=32),
     "neck.width_p3: low 32 > high 16"),
    ("neck ratio 5", _set("neck.ratio", [2, 5]), "neck.ratio: choice 1 must be a Ghost ratio between 2 and 4"),
    ("neck attention not a bool", _set("neck.attention", [False, 1]),
     "neck.attention: choice 1 expected a bool (true/false), got 1"),
    ("neck dfc kernel without attention", _set("neck.dfc_kernel", 3),
     "neck.dfc_kernel: has no effect because neck.attention is always false"),
    ("neck even dfc kernel", _neck(width=16, attention=True, dfc_kernel=[3, 4]),
     "neck.dfc_kernel: choice 1 must be an odd positive int, got 4"),
    ("neck branches 5", _set("neck.branches", {"low": 0, "high": 5}), "neck.branches: range [0, 5] includes 5"),
    ("neck scale", _set("neck.scale", False), "neck: unknown key(s) ['scale']"),
]


@pytest.mark.parametrize("edit, message", [(e, m) for _, e, m in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_space_is_refused_naming_the_key_path(tmp_path, edit, message):
    path = write_space(tmp_path, changed(edit))
    with pytest.raises(UserError) as err:
        load_space(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_base_space_is_valid(tmp_path):
    """The malformed cases fail because of their one change, not because BASE is wrong."""
    assert isinstance(load_space(write_space(tmp_path, BASE)), SearchSpace)


@pytest.mark.parametrize("text, message", [
    ("stages: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    ("stages: [\n", "invalid YAML"),
    ("- 1\n- 2\n", "a space must be a mapping"),
    ("", "a space must be a mapping"),
])
def test_unreadable_or_non_mapping_files_are_refused(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_space(write_space(tmp_path, text))


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_space(tmp_path / "nope.yaml")


# --- the neck: per-level widths, Ghost ratio, DFC attention and re-param branches ------------------

NECK = {"width_p3": [16, 24], "width_p4": {"low": 24, "high": 40, "step": 8}, "width_p5": [32, 48],
        "depth": {"low": 1, "high": 2}, "ratio": [2, 3, 4], "attention": [False, True], "dfc_kernel": [3, 5],
        "branches": {"low": 0, "high": 4}}
NECK_PARAMS = ["neck.width_p3", "neck.width_p4", "neck.width_p5", "neck.depth", "neck.ratio", "neck.attention",
               "neck.branches"]


@pytest.fixture(scope="module")
def neck_space(tmp_path_factory) -> SearchSpace:
    return load_space(write_space(tmp_path_factory.mktemp("neck"), changed(_neck(**NECK)), "neck"))


def _neck_rows(arch: dict) -> dict:
    """The neck rows pan_neck writes, by role (row offsets from the first head row)."""
    head = arch["head"]
    return {"lateral": head[0], "csp": [head[3], head[6], head[9], head[12]], "down": [head[7], head[10]]}


def test_neck_leaves_become_parameters_by_key_path(neck_space):
    d = neck_space.distributions()
    assert [k for k in d if k.startswith("neck.")] == NECK_PARAMS  # in sampling order
    assert d["neck.width_p4"] == optuna.distributions.IntDistribution(24, 40, step=8)
    assert d["neck.attention"].choices == (False, True) and d["neck.ratio"].choices == (2, 3, 4)
    assert "neck.dfc_kernel" in neck_space.distributions(conditional=True)


def test_neck_values_reach_the_rows_and_conditionals_only_where_they_hold(neck_space):
    seen = {k: set() for k in NECK_PARAMS + ["neck.dfc_kernel"]}
    for seed in range(40):
        trial = random_trial(seed)
        arch = neck_space.sample(trial, NC)
        p = trial.params
        assert ("neck.dfc_kernel" in p) == p["neck.attention"]
        for k in seen:
            if k in p:
                seen[k].add(p[k])
        rows = _neck_rows(arch)
        w3, w4, w5 = p["neck.width_p3"], p["neck.width_p4"], p["neck.width_p5"]
        dfc = p["neck.dfc_kernel"] if p["neck.attention"] else 0
        assert rows["lateral"][3][0] == w5
        assert [r[3] for r in rows["csp"]] == [[w, p["neck.ratio"], dfc, p["neck.branches"]] for w in (w4, w3, w4, w5)]
        assert all(r[1] == p["neck.depth"] for r in rows["csp"])
        extra = [0, p["neck.branches"]] if p["neck.branches"] else []  # the stride-2 convs get branches too
        assert [r[3] for r in rows["down"]] == [[w, 3, 2, p["neck.ratio"], *extra] for w in (w3, w4)]
        assert neck_space.arch_from_params(dict(p), NC) == arch
    assert all(len(values) > 1 for values in seen.values()), seen  # every neck leaf is really searched


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_neck_candidates_build_run_and_fuse(neck_space, seed):
    trial = random_trial(seed)
    model = randomize_bn(build_model(neck_space.sample(trial, NC))).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = model(x)
        assert [tuple(o.shape) for o in out] == [(2, 64 + NC, 8, 8), (2, 64 + NC, 4, 4), (2, 64 + NC, 2, 2)]
        fused = reparameterize(copy.deepcopy(model))
        assert max((a - b).abs().max().item() for a, b in zip(out, fused(x))) < 1e-4
    neck = model.layers[len(model.arch["backbone"]):]
    assert any(isinstance(m, RepConv) for m in neck.modules()) == (trial.params["neck.branches"] > 0)
    assert any(isinstance(m, DFCAttention) for m in neck.modules()) == trial.params["neck.attention"]


def test_old_style_spaces_ask_for_the_same_parameters_as_before(tmp_path):
    """A space written before the neck was searched (one `width`, no ratio / attention / branches)
    still loads and asks for exactly the parameters it always did, in the same order, and its
    neck rows are the ones it always wrote: existing studies replay unchanged."""
    space = load_space(Path(__file__).parent / "data" / "tiny_space.yaml")
    assert list(space.distributions(conditional=True)) == [
        "stages.0.width", "stages.1.width", "stages.1.attention", "stages.2.depth", "stages.2.width",
        "stages.2.branches", "stages.3.width", "last", "neck.width"]
    trial = random_trial(0)
    arch = space.sample(trial, NC)
    assert [k for k in trial.params if k.startswith("neck.")] == ["neck.width"]
    w = trial.params["neck.width"]
    rows = _neck_rows(arch)
    assert [r[3] for r in rows["csp"]] == [[w, 2, 0, 0]] * 4 and [r[3] for r in rows["down"]] == [[w, 3, 2, 2]] * 2
    # BASE's old-style neck with a fixed ratio, as the default space had it: still no new parameters.
    old = load_space(write_space(tmp_path, changed(_set("neck.ratio", 2))))
    assert [k for k in old.distributions(conditional=True) if k.startswith("neck.")] == ["neck.width", "neck.depth"]

