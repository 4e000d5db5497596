"""``mssd train``'s last line names only checkpoints that exist."""

from study.cli.train_cmd import done_line


def test_done_line_without_a_best_checkpoint_says_so_and_names_the_last_one():
    line = done_line({"map": float("nan"), "ap50": float("nan")}, None, "runs/x/checkpoints/last.pt")
    assert "best checkpoint" not in line.replace("no best checkpoint", "")
    assert "no best checkpoint (no epoch had a finite mAP)" in line and line.endswith("runs/x/checkpoints/last.pt")


def test_done_line_with_a_best_checkpoint_names_it():
    assert done_line({"map": 0.5}, "runs/x/checkpoints/best.pt").endswith("best checkpoint runs/x/checkpoints/best.pt")
