"""Part f: one markdown table (device, torch, CUDA, each figure, pass/fail against the goals) and the JSON
of every figure, into ``--out``: ``gpu_check.md`` and ``gpu_check.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PARTS = ("a", "b", "c", "d", "e")


def verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("pass" if passed else "FAIL")


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) else f"{1000 * seconds:.1f} ms"


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"# GPU check, {results['date']}", "",
             f"{env['device']}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}; "
             f"{env['mode']}; load {', '.join(f'{x:.2f}' for x in env['load'])}; {results['seconds']:.0f} s in all", "",
             "| part | what | figure | goal | result |", "| --- | --- | --- | --- | --- |"]
    a, b, c, d, e = (results["parts"].get(p) for p in PARTS)
    timed = env["mode"] == "full"  # the smoke run's figures are toy sizes on a shared CPU, not timings

    def goal(passed: bool | None) -> str:
        return verdict(passed) if timed else "n/a (smoke)"
    if a is not None:
        lines.append(_row_a(a))
    if b is not None:
        for row in b.get("rows", []):
            figure = (f"step {_ms(row.get('step_s'))} as trained; {_ms(row.get('step_on_device_s'))} on-device; "
                      + (f"GPU busy {_ms(row['gpu_busy_s'])}, {row['launches_per_step']:.0f} launches, "
                         f"{row['profiler_syncs_per_step']:.1f} stream syncs" if "gpu_busy_s" in row
                         else f"{row.get('top_level_ops_per_step', 0):.0f} top-level ops")
                      + f" per step; host syncs/step {row.get('syncs_per_step')}") if row["status"] == "ok" \
                else f"failed: {row.get('error', '')[:200]}"
            lines.append(f"| b | {row['detector']}, compile {row['compile']} | {figure} | step <= {_ms(b['goal_s'])} | "
                         f"{goal(row['status'] == 'ok' and row.get('step_s', 1) <= b['goal_s'])} |")
    if c is not None:
        for row in c.get("epochs", []):
            lines.append(f"| c | epochs, cache {row['cache']}, {row['steps']} steps | first {_s(row['first_s'])}, "
                         f"second {_s(row['second_s'])} (x{row['ratio']:.2f}) | <= x{c['ratio_goal']} | "
                         f"{goal(row['ratio'] <= c['ratio_goal'])} |")
        for row in c.get("loaders", []):
            lines.append(f"| c | loader, {row['workers']} workers, cache {row['cache']} | {_ms(row['per_batch_s'])}/batch "
                         f"(first batch {_s(row['first_batch_s'])}) | | |")
        join = results.get("loader_vs_step")
        if join is not None:
            lines.append(f"| b+c | loader at {join['workers']} workers vs step | {_ms(join['per_batch_s'])} vs "
                         f"{_ms(join['step_s'])} | loader faster | {goal(join['passed'])} |")
        lines += [f"| c | error | {err[:200]} | | FAIL |" for err in c.get("errors", [])]
    if d is not None:
        for row in d.get("rows", []):
            scored = (f"total {_s(row['total_s'])}, mAP {100 * row['map']:.2f}; " if "total_s" in row else "not scored; ")
            lines.append(f"| d | eval of {row['images']} images, rect {'on' if row['rect'] else 'off'} | {scored}model "
                         f"{_s(row['model_s'])}, NMS {_s(row['nms_s'])}, COCO {_s(row.get('coco_s'))} | "
                         f"{'<= ' + _s(d['goal_s']) if row['rect'] else ''} | "
                         f"{goal(d['passed'] if d['backend'] else None) if row['rect'] else ''} |")
        if d.get("note"):
            lines.append(f"| d | note | {d['note']} | | n/a |")
        lines += [f"| d | error | {err[:200]} | | FAIL |" for err in d.get("errors", [])]
    if e is not None:
        for row in e.get("rows", []):
            lines.append(f"| e | {row['trials']} packed trainings | "
                         + ", ".join(f"{v:.1f}" for v in row["images_per_s"])
                         + f" images/s each, {row['total_images_per_s']:.1f} in total | | |")
        speedup = "n/a" if e.get("speedup") is None else f"x{e['speedup']:.2f}"
        lines.append(f"| e | packed vs one trial | {speedup} | >= x{e['goal']} | {goal(e['passed'])} |")
        lines += [f"| e | error | {err[:200]} | | FAIL |" for err in e.get("errors", [])]
    for part, error in results.get("crashed", {}).items():
        lines.append(f"| {part} | crashed | {error[:300]} | | FAIL |")
    lines += ["", f"Host syncs counted by: {results.get('sync_method', 'n/a')}."]
    if a is not None:
        lines += ["", "## Part a: every family", "", "| detector | method | status | loss | host syncs/step (max) | "
                  "loss-log reads | peak MiB | s | where the syncs are |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in a["rows"]:
            if row["status"] == "ok":
                lines.append(f"| {row['detector']} | {row['method']} | ok | {row['loss']:.4g} | {row['syncs_per_step']} "
                             f"({row['syncs_max']}) | {row['loss_read_syncs']} | {row['peak_mib']:.0f} | "
                             f"{row['seconds']:.1f} | {_sites(row)} |")
            else:
                lines.append(f"| {row['detector']} | {row['method']} | {row['status']}: "
                             f"{row.get('error', '')[:160].replace('|', '/')} | | | | | {row['seconds']:.1f} | |")
        lines += [f"- {note}" for note in a.get("notes", [])]
    return "\n".join(lines) + "\n"


def _sites(row: dict[str, Any]) -> str:
    return ", ".join(f"{site} x{n}" for site, n in row.get("sync_sites", {}).items())


def _row_a(a: dict[str, Any]) -> str:
    return (f"| a | every family ({len(a['families'])}) through the trainer: sizes and methods below | "
            f"{a['summary']} | finite loss, no sync inside a step | {verdict(a['passed'] and a['syncs_free'])} |")


def write_report(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "gpu_check.md", out / "gpu_check.json"
    md.write_text(markdown(results))
    js.write_text(json.dumps(results, indent=1, default=str))
    return md, js
