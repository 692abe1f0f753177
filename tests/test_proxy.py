"""The proxy's length in optimizer steps: the same learning on any data set, rounded up to whole
epochs once per search; a warning when it is too short to rank, and when every candidate ties."""
import optuna
import pytest

from evaluators.train import batches_per_epoch, train
from nas.cli import main
from nas.search.config import DEFAULT_STEPS, Fidelity, SearchConfig
from nas.search.proxy import TOO_FEW_STEPS, ProxyPlan, TieWatch
from tests.searching import SPACE, load
from tests.test_train import TINY_DATA, tiny_model


def test_steps_become_whole_epochs_of_the_data():
    assert batches_per_epoch(256, 16) == 16 and batches_per_epoch(72, 16) == 4 and batches_per_epoch(20, 16) == 2
    assert ProxyPlan.of(64, None, 256, 16).epochs == 4
    assert ProxyPlan.of(64, None, 72, 16).epochs == 16   # a small set: more epochs, the same steps
    assert ProxyPlan.of(50, None, 72, 16).epochs == 13   # rounded up: at least the steps asked for
    assert ProxyPlan.of(64, 3, 72, 16).epochs == 3       # --epochs says it alone
    assert ProxyPlan.of(64, None, 72, 16).describe() == "64 optimizer steps (16 epochs of 72 training images at batch 16)"


def test_a_proxy_in_epochs_on_a_small_set_is_flagged_as_too_short():
    """The issue's case: --epochs 4 on 72 images at batch 16 is 16 steps."""
    plan = ProxyPlan.of(None, 4, 72, 16)
    assert plan.steps == 16 < TOO_FEW_STEPS
    assert "16 optimizer steps" in plan.too_short() and f"--steps {DEFAULT_STEPS}" in plan.too_short()
    assert ProxyPlan.of(DEFAULT_STEPS, None, 72, 16).too_short() is None
    assert ProxyPlan.of(None, 3, 256, 16).too_short()  # a former default, 48 steps, ranked no better than noise
    assert ProxyPlan.of(64, None, 256, 16).too_short() is None  # ranks (as MACs do): not flagged, not the default
    assert DEFAULT_STEPS > TOO_FEW_STEPS


def test_train_runs_the_epochs_that_give_the_steps():
    result = train(tiny_model(), TINY_DATA, steps=5, batch=4, imgsz=64, seed=0)  # 8 images: 2 steps an epoch
    assert result.epochs_run == 3


def test_old_studies_keep_their_epochs():
    """A study stored before steps existed resumes with its epochs, and the same identity."""
    old = SearchConfig.from_dict({"space": "s.yaml", "budget_ms": 15.0, "study": "x", "storage": "sqlite://",
                                  "fidelity": {"data": "synthetic", "epochs": 3}})
    assert (old.fidelity.epochs, old.fidelity.steps) == (3, None)
    assert Fidelity().steps == DEFAULT_STEPS and Fidelity().epochs is None


def _study_with(maps):
    study = optuna.create_study(direction="maximize")
    for m in maps:
        t = study.ask()
        t.set_user_attr("trained", True)
        study.tell(t, m)
    return study


def test_the_tie_watch_speaks_once_when_every_candidate_scores_the_same():
    said = []
    watch = TieWatch(_study_with([0.0, 0.0]), said.append, "16 optimizer steps")
    watch()
    assert said == []  # two are not yet a pattern
    watch.study = _study_with([0.0, 0.0, 0.0])
    watch()
    watch()
    assert len(said) == 1 and "all 3 trained candidates score mAP 0.0000" in said[0] and "--steps" in said[0]
    separated = TieWatch(_study_with([0.0, 0.01, 0.0]), said.append, "64 optimizer steps")
    separated()
    assert len(said) == 1


FAST_DATA = ["--data", "synthetic:n=16,val=8,size=64", "--imgsz", "64", "--batch", "8", "--latency", "measured"]


def test_a_search_in_steps_records_its_plan_and_trains_that_long(in_tmp, ray_cluster, capsys):
    """--steps 3 on 16 images at batch 8 (2 steps an epoch): 2 epochs per candidate, said and stored."""
    args = ["search", str(SPACE), "--budget", "1s", "--trials", "2", "--steps", "3", "--study", "st", *FAST_DATA]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "proxy: 4 optimizer steps (2 epochs of 16 training images at batch 8) per candidate" in out.err
    assert "warning: the proxy is 4 optimizer steps" in out.out + out.err  # under TOO_FEW_STEPS
    study = load("st")
    assert study.user_attrs["proxy"] == {"epochs": 2, "train_images": 16, "batch": 8}
    assert study.user_attrs["identity"]["steps"] == 3 and study.user_attrs["identity"]["epochs"] is None
    assert [t.user_attrs["epochs_run"] for t in study.trials if t.user_attrs.get("trained")] == [2, 2]
    # the same study with the length said another way is another search
    capsys.readouterr()
    as_epochs = [a for a in args if a not in ("--steps", "3")] + ["--epochs", "2"]
    assert main(as_epochs) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--steps 3, not unset; --epochs unset, not 2" in err, err


def test_a_short_proxy_is_said_before_the_search_starts(in_tmp, ray_cluster, capsys):
    args = ["search", str(SPACE), "--budget", "1s", "--trials", "1", "--epochs", "1", "--study", "short", *FAST_DATA]
    assert main(args) == 0
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.startswith("warning: the proxy is")]
    assert len(lines) == 1 and "2 optimizer steps" in lines[0], out


@pytest.mark.parametrize("bad, message", [(["--steps", "64", "--epochs", "3"], "--steps and --epochs"),
                                          (["--steps", "0"], "--steps must be at least 1")])
def test_bad_proxy_lengths_are_one_line(in_tmp, capsys, bad, message):
    assert main(["search", str(SPACE), "--budget", "15ms", *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
