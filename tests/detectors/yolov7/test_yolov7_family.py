"""The three families of the yolov7 repository in the zoo: names, sizes, recipe, tap sets."""

from __future__ import annotations

from detectors.zoo import FAMILIES, family_of


def test_each_detector_name_belongs_to_its_family():
    assert {n: family_of(n).name for n in ("yolov3", "yolov3_spp", "yolov4_csp", "yolov7_tiny", "yolov7",
                                           "yolov7x")} == {
        "yolov3": "yolov3", "yolov3_spp": "yolov3", "yolov4_csp": "yolov4", "yolov7_tiny": "yolov7",
        "yolov7": "yolov7", "yolov7x": "yolov7"}


def test_cpu_budgets_train_yolov7_tiny():
    assert FAMILIES["yolov7"].smallest == "yolov7_tiny"


def test_recipe_is_hyp_scratch_p5():
    recipe = FAMILIES["yolov7"].recipe
    assert (recipe.lr0, recipe.lrf, recipe.momentum, recipe.weight_decay, recipe.warmup_epochs) == (
        0.01, 0.1, 0.937, 0.0005, 3.0)
    assert recipe.loss_scaled_by_batch and recipe.nominal_batch == 64 and recipe.grad_clip is None
    assert recipe.augment["mixup"] == 0.15 and recipe.augment["scale"] == 0.9


def test_yolov3_pairs_inside_its_fpn_and_the_others_fpn_to_pan():
    assert FAMILIES["yolov3"].default_taps == "merged_to_output"
    assert FAMILIES["yolov4"].default_taps == FAMILIES["yolov7"].default_taps == "fpn_to_pan"
