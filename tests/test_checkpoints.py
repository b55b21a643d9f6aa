"""Model selection across a resume, and checkpoints written by older versions of the kit (issue 24)."""

import pytest
import torch

import gmreg_lab as gl
from conftest import tiny_cfg


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a, b))


def test_model_selection_is_the_same_with_and_without_a_resume(tmp_path):
    """select_best keeps the epoch with the best validation I-FGSM-3 accuracy; a run stopped after its first epoch and
    resumed selects the same epoch, with the same weights, as the run trained in one go; which="best" and
    which="last" load what the run selected and where it ended."""
    cfg = tiny_cfg(method="fgsm", epochs=3, limit=128, select_best=True, lr=0.05)
    whole = gl.train(cfg, tmp_path / "whole", progress=False)
    part = gl.train(cfg, tmp_path / "part", progress=False,
                    callback=lambda row: row["event"] == "epoch" and row["epoch"] == 1)
    assert part.stopped and gl.runs.load_checkpoint(tmp_path / "part")["epoch"] == 1
    resumed = gl.train(cfg, tmp_path / "part", resume=True, progress=False)
    scores = [r["val_ifgsm3"] for r in resumed.history if r["event"] == "epoch"]
    assert len(scores) == 3 and scores == [r["val_ifgsm3"] for r in whole.history if r["event"] == "epoch"]
    best = 1 + max(range(3), key=lambda i: (scores[i], -i))           # the first epoch with the top score
    assert resumed.metrics["best_epoch"] == whole.metrics["best_epoch"] == best
    assert resumed.metrics["best_val_ifgsm3"] == max(scores)
    assert _same(_params(resumed.model), _params(whole.model)), "the same selected weights"
    assert _same(_params(gl.load_model(tmp_path / "part", which="best")), _params(whole.model))
    assert _same(_params(gl.load_model(tmp_path / "part", which="last")), _params(whole.last_model))
    assert _same(_params(gl.load_model(tmp_path / "part")), _params(whole.model)), "best is the default"


def test_without_selection_best_is_the_last_epoch(tmp_path):
    res = gl.train(tiny_cfg(epochs=2, select_best=False), tmp_path / "run", progress=False)
    assert res.metrics["best_epoch"] is None
    assert _same(_params(gl.load_model(tmp_path / "run", which="best")), _params(res.last_model))


@pytest.mark.parametrize("normalize", [True, False])
def test_a_checkpoint_from_before_newer_config_fields_still_loads_and_resumes(tmp_path, normalize):
    """Runs saved before a config field existed have no such key: they load with the field's default (normalize:
    True, what every run did before the option existed), predict as before and resume."""
    cfg = tiny_cfg(epochs=2, normalize=normalize, select_best=False)
    out = tmp_path / "run"
    res = gl.train(cfg, out, progress=False, callback=lambda row: row["event"] == "epoch")   # stops after epoch 1
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    expected = res.model(x)
    ckpt = gl.runs.load_checkpoint(out)
    newer = ["rs_step", "nfgsm_k", "align_lam", "eps_warmup_epochs"] + (["normalize"] if normalize else [])
    for key in newer:
        ckpt["config"].pop(key)
    gl.runs.save_checkpoint(gl.runs.checkpoint_path(out), ckpt)
    old = gl.runs.load_checkpoint(out)["config"]
    assert not set(newer) & set(old), "the checkpoint now looks like an old one"
    got = gl.load_model(out)(x)
    assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()
    assert res.stopped and gl.runs.load_checkpoint(out)["epoch"] == 1
    cont = gl.train(cfg, out, resume=True, progress=False)        # the same run: its second epoch
    assert cont.metrics["epochs_done"] == 2 and cont.metrics["complete"]


def test_a_checkpoint_from_a_newer_kit_loads_its_weights_but_is_not_resumed(tmp_path):
    """A config key this version does not know: the weights still load (they do not depend on it), but resuming
    would silently drop the setting, so it is refused with a one-line error naming the key."""
    out = tmp_path / "run"
    cfg = tiny_cfg(epochs=2, select_best=False)
    res = gl.train(cfg, out, progress=False, callback=lambda row: row["event"] == "epoch")
    ckpt = gl.runs.load_checkpoint(out)
    ckpt["config"]["field_from_the_future"] = 1
    gl.runs.save_checkpoint(gl.runs.checkpoint_path(out), ckpt)
    assert _same(_params(gl.load_model(out)), _params(res.last_model))
    with pytest.raises(gl.errors.GmregError, match="field_from_the_future"):
        gl.train(cfg, out, resume=True, progress=False)
