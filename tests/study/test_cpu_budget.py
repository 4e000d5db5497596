"""The cpu budget: the YOLO families train the recipe that learns; the others say they only check the pipeline."""

from __future__ import annotations

from study.paper_tables import load_paper_table
from study.reproduce import BUDGETS, _base_config, _context, _detector_plan


def test_the_cpu_budget_trains_yolo_families_with_the_recipe_that_learns():
    budget = BUDGETS["cpu"]
    v5 = _base_config(budget, "yolov5n", [], "runs")
    assert (v5.train.epochs, v5.train.max_steps_per_epoch, v5.train.lr0, v5.data.img_size) == (24, 40, 0.03, 192)
    assert (v5.data.synthetic.width, v5.data.synthetic.height, v5.data.synthetic.images) == (256, 192, 400)
    yolox = _base_config(budget, "yolox_nano", [], "runs")
    assert (yolox.train.epochs, yolox.train.max_steps_per_epoch, yolox.data.img_size) == (24, 40, 192)
    assert budget.seeds >= 3  # a delta needs seeds for its interval


def test_families_that_do_not_learn_at_the_cpu_budget_run_a_pipeline_check_on_the_same_data():
    fcos = _base_config(BUDGETS["cpu"], "fcos_tiny", [], "runs")
    assert (fcos.train.epochs, fcos.train.max_steps_per_epoch) == (4, 25)
    assert (fcos.data.synthetic.width, fcos.data.synthetic.height, fcos.data.synthetic.images) == (256, 192, 400)


def test_the_table_context_names_the_families_that_do_not_learn():
    budget = BUDGETS["cpu"]
    table = load_paper_table(7)
    plan = _detector_plan(table, budget, None)
    bases = {trained: _base_config(budget, trained, [], "runs") for trained, _ in plan}
    lines = _context(table, budget, plan, bases, [0, 1, 2], None)
    note = next(line for line in lines if line.startswith("Note:") and "learn at the cpu budget" in line)
    assert "fcos" in note and "yolov5" not in note
    table2 = load_paper_table(2)
    plan2 = _detector_plan(table2, budget, None)
    lines2 = _context(table2, budget, plan2, {t: _base_config(budget, t, [], "runs") for t, _ in plan2}, [0], None)
    assert not any(line.startswith("Note:") and "learn at the cpu budget" in line for line in lines2)


def test_table1_families_train_their_cpu_recipes_or_say_why_they_fall_short():
    budget = BUDGETS["cpu"]
    v6 = _base_config(budget, "yolov6n", [], "runs")
    assert (v6.train.epochs, v6.train.max_steps_per_epoch, v6.train.lr0, v6.data.img_size) == (24, 40, 0.02, 192)
    v7 = _base_config(budget, "yolov7_tiny", [], "runs")
    assert (v7.train.epochs, v7.train.max_steps_per_epoch, v7.data.img_size) == (24, 40, 192)
    v3 = _base_config(budget, "yolov3", [], "runs")
    assert (v3.train.epochs, v3.train.max_steps_per_epoch) == (4, 25)  # the pipeline check
    table = load_paper_table(1)
    plan = _detector_plan(table, budget, None)
    lines = _context(table, budget, plan, {t: _base_config(budget, t, [], "runs") for t, _ in plan}, [0], None)
    note = next(line for line in lines if line.startswith("Note:") and "learn at the cpu budget" in line)
    assert "yolov7 (YOLOv7-tiny reaches about 16 % mAP" in note
    assert "yolov3 (a step costs" in note and "yolov4 (a step costs" in note
    assert "yolov6" not in note and "yolov5" not in note
