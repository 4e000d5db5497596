"""One demo-sized trial outside Ray: does it learn, and how fast? (how the demo's settings were chosen)

    .venv/bin/python benchmarks/bench_demo_trial.py NAME [KEY.PATH=VALUE ...]

Trains ``configs/smoke.yaml`` with the given overrides through ``detectors.engine.trainer.fit`` in one
process with 1 torch thread (what a demo trial gets: 1 CPU), printing per epoch the elapsed time,
losses, AP50 and mAP on the val split, and the load average. The runs recorded in benchmarks/README.md
("Demo") used the 4:3 set::

    data.root=/tmp/demo-probe data.synthetic.images=400 data.synthetic.width=256 data.synthetic.height=192
    data.synthetic.val_fraction=0.1 data.img_size=192 train.batch_size=8 train.max_steps_per_epoch=40
    train.warmup_epochs=1 eval.max_det=50 train.nominal_batch=null train.epochs=... train.lr0=...
    losses.lambda_distill=... losses.lambda_mask=...
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> int:
    import torch

    from detectors.engine.trainer import fit
    from study.config import load_config

    name, overrides = argv[0], argv[1:]
    torch.set_num_threads(1)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml", overrides)
    start = time.perf_counter()

    class Progress:
        def after_epoch(self, trainer, epoch: int, m: dict) -> None:
            print(f"{name} {time.perf_counter() - start:6.0f}s ep{epoch} loss {m['loss/total']:.3f} "
                  f"gt {m.get('loss/gt', math.nan):.3f} ap50 {m.get('ap50', math.nan):.3f} "
                  f"map {m.get('map', math.nan):.3f} train {m['time/train_steps']:.0f}s "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)

    fit(cfg, f"/tmp/bench-demo-trial/{name}", callbacks=[Progress()])
    print(f"{name} done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
