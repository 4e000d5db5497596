"""The comparators (KD, FGFI, DeFeat) end to end: the frozen teacher, its file checks, one tiny training epoch
per method through the common trainer, the non-finite check, model info and the search spaces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detectors.comparators.teacher import FrozenTeacher, TeacherError, build_teacher
from detectors.config import parse_config
from detectors.distillation import build_distillation_for
from detectors.engine.schedule import build_sgd
from detectors.engine.trainer import fit
from detectors.errors import NonFiniteLossError
from detectors.model_info import format_model_info, model_info
from detectors.zoo import build_detector

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["Car", "Pedestrian", "Cyclist"]
PARTS = {"kd": ("soft", "regression", "hint"), "fgfi": ("imitation",),
         "defeat": ("feature_object", "feature_background", "cls_object", "cls_background")}


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """A yolov5n-sized teacher saved as a plain state dict (what a user's own training would give)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(build_detector("yolov5n", num_classes=len(CLASSES)).state_dict(), path)
    return path


def run_config(method: str, teacher: Path | str | None, data_root: Path | None = None, **losses):
    return parse_config({
        "detector": {"name": "yolov5n"},
        "data": {"format": "synthetic", "root": str(data_root or "unused"), "img_size": 64, "workers": 0,
                 "classes": CLASSES, "synthetic": {"images": 5, "seed": 0, "width": 128, "height": 64},
                 "augment": {"mosaic": 0.0}},
        "losses": {"method": method, **losses},
        "distill": {"teacher": {"name": "yolov5n", "weights": None if teacher is None else str(teacher)}},
        "train": {"epochs": 1, "batch_size": 2, "max_steps_per_epoch": 1, "warmup_epochs": 0, "device": "cpu"},
        "eval": {"max_det": 10},
    })


def test_the_teacher_is_frozen_and_outside_the_optimizer_and_checkpoints(teacher_file):
    model = build_detector("yolov5n", num_classes=3)
    dist = build_distillation_for(run_config("defeat", teacher_file), model)
    teacher = dist.teacher
    assert isinstance(teacher, FrozenTeacher) and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    saved = torch.load(teacher_file)
    assert all(torch.equal(v, saved[k]) for k, v in teacher.model.state_dict().items())  # loaded, all of it
    teacher_ids = {id(p) for p in teacher.parameters()}
    optimizer = build_sgd([model, dist], lr=0.01, momentum=0.9, weight_decay=0.0)
    slots = [p for group in optimizer.param_groups for p in group["params"]]
    assert slots and not teacher_ids & {id(p) for p in slots}
    assert not any(k.startswith(("_teacher", "teacher")) for k in dist.state_dict())
    dist.train()
    images = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.5], [1, 0, 0.3, 0.4, 0.2, 0.3]])
    terms = dist(model(images), targets, 64, images=images)
    dist.total_loss(torch.zeros(()), terms, 2).backward()
    assert not teacher.training  # train() on the wrapper never reaches it
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in dist.parameters())  # the adapters learn
    dist.to(torch.float64)
    assert next(teacher.parameters()).dtype == torch.float64  # moved and converted with the module


@pytest.mark.parametrize("case", ["missing", "other size", "other classes", "other detector checkpoint", "junk"])
def test_a_bad_teacher_file_is_one_line_naming_it(tmp_path, case):
    path = tmp_path / "t.pt"
    if case == "other size":
        torch.save(build_detector("yolov5s", num_classes=3).state_dict(), path)
    elif case == "other classes":
        torch.save(build_detector("yolov5n", num_classes=5).state_dict(), path)
    elif case == "other detector checkpoint":
        torch.save({"format": "mssd-checkpoint", "version": 1, "detector": "yolov5s", "model": {}, "ema": None}, path)
    elif case == "junk":
        path.write_text("not a torch file")
    with pytest.raises(TeacherError) as err:
        build_teacher(run_config("kd", path))
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    reason = {"missing": "no such file", "other size": "shape", "other classes": "do not fit 3 classes",
              "other detector checkpoint": "a yolov5s checkpoint", "junk": "not"}[case]
    assert reason in message


def test_one_of_our_checkpoints_teaches_with_its_ema_weights(tmp_path):
    torch.manual_seed(2)
    raw, ema = build_detector("yolov5n", num_classes=3), build_detector("yolov5n", num_classes=3)
    path = tmp_path / "last.pt"
    torch.save({"format": "mssd-checkpoint", "version": 1, "detector": "yolov5n", "model": raw.state_dict(),
                "ema": {"module": ema.state_dict(), "updates": 5}}, path)
    teacher = build_teacher(run_config("fgfi", path))
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in teacher.model.state_dict().items())


def test_mssd_train_refuses_a_missing_teacher_before_writing_anything(tmp_path, capsys):
    from study.cli import main
    from study.config import save_config

    config = tmp_path / "kd.yaml"
    save_config(run_config("kd", tmp_path / "absent.pt", tmp_path / "data"), config)
    workdir = tmp_path / "runs"
    assert main(["train", str(config), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "absent.pt" in err and "\n" not in err
    assert not workdir.exists() and not (tmp_path / "data").exists()  # not even the data was generated


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "synthetic"


@pytest.mark.parametrize("method", ["kd", "fgfi", "defeat"])
def test_each_method_trains_an_epoch_through_the_trainer_and_logs_its_terms(method, teacher_file, data_root, tmp_path):
    metrics = fit(run_config(method, teacher_file, data_root), tmp_path)
    terms = {f"loss/{method}", *(f"loss/{method}/{p}" for p in PARTS[method])}
    assert terms <= set(metrics) and "loss/distill" not in metrics
    assert all(metrics[t] == metrics[t] and metrics[t] >= 0 for t in terms)  # finite, not negative
    assert metrics[f"loss/{method}"] == pytest.approx(sum(metrics[f"loss/{method}/{p}"] for p in PARTS[method])
                                                     if method != "fgfi" else metrics["loss/fgfi/imitation"], rel=1e-5)
    assert metrics[f"loss/{method}"] > 0
    # per image: total = L_gt + L_method / batch (losses.scale unscaled_terms, the default: only L_gt carries
    # YOLOv5's batch factor; docs/findings.md)
    assert metrics["loss/total"] == pytest.approx(metrics["loss/gt"] + metrics[f"loss/{method}"] / 2, rel=1e-4)


def test_under_the_batch_reading_the_method_term_keeps_its_weight_per_image(teacher_file, data_root, tmp_path):
    metrics = fit(run_config("kd", teacher_file, data_root, scale="batch"), tmp_path)
    assert metrics["loss/total"] == pytest.approx(metrics["loss/gt"] + metrics["loss/kd"], rel=1e-4)


def test_a_non_finite_method_term_fails_the_run_naming_it(teacher_file, data_root, tmp_path, monkeypatch):
    import detectors.comparators.kd as kd

    monkeypatch.setattr(kd, "hint_loss", lambda adapted, teachers: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match=r"loss/kd = nan"):
        fit(run_config("kd", teacher_file, data_root), tmp_path)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_model_info_counts_each_method_apart_and_lists_the_teacher():
    model = build_detector("yolov5n", num_classes=3)
    # no file needed: model info builds the teacher's architecture only
    kd = build_distillation_for(run_config("kd", None), model, load_teacher=False)
    info = model_info(model, name="yolov5n", num_classes=3, img_size=64, distillation=kd)
    assert list(info.training_parts) == ["kd"] and info.training_params == kd.count_parameters()["total"]
    assert info.teacher.params == info.params and info.teacher.gflops == pytest.approx(info.gflops)  # yolov5n
    assert "frozen teacher yolov5n" in format_model_info(info)
    counts = {m: build_distillation_for(run_config(m, None), model, load_teacher=False).count_parameters()[m]
              for m in ("fgfi", "defeat")}
    # 1x1 hint adapters (64, 128, 256 channels) for KD, 3x3 adapters for FGFI and DeFeat
    assert info.training_params == sum(c * c + c for c in (64, 128, 256))
    assert counts["fgfi"] == counts["defeat"] == sum(9 * c * c + c for c in (64, 128, 256))


@pytest.mark.parametrize("method", ["kd", "fgfi", "defeat"])
def test_the_search_spaces_name_flat_config_keys_mssd_tune_accepts(method):
    from study.search_space import load_search_space

    space = load_search_space(REPO / "search_spaces" / f"{method}.yaml")
    assert space.keys and all(k.startswith(f"losses.{method}.") for k in space.keys)
