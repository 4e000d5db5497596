"""The YOLOv5 forward contract of CONTRIBUTING.md: head maps, neck taps, decoding, NMS, traceability."""

from __future__ import annotations

import pytest
import torch

from detectors import build_detector
from detectors.api import DetectorOutput

# Ultralytics' graph: the "from" column of yolov5*.yaml for layers 0-24.
FROM = [-1] * 12 + [[-1, 6], -1, -1, -1, [-1, 4], -1, -1, [-1, 14], -1, -1, [-1, 10], -1, [17, 20, 23]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_detector("yolov5n", num_classes=3)
    # Non-trivial BN statistics, so train and eval modes differ and taps are not all alike.
    with torch.no_grad():
        for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return m


def reference_forward(model, x):
    """Ultralytics' _forward_once: run self.model in order, feeding each layer from the FROM table."""
    outputs = []
    for i, layer in enumerate(model.model):
        src = FROM[i]
        if src != -1:
            x = outputs[src] if isinstance(src, int) else [x if j == -1 else outputs[j] for j in src]
        x = layer(x)
        outputs.append(x)
    return outputs


def reference_decode(maps, anchors_grid_units, strides):
    """Ultralytics' eval-mode Detect: xy = (2 sig - 0.5 + grid) * stride, wh = (2 sig)^2 * anchor px."""
    z = []
    for p, anchors, s in zip(maps, anchors_grid_units, strides, strict=True):
        b, na, ny, nx, no = p.shape
        y = p.sigmoid()
        out = torch.empty_like(y)
        for a in range(na):
            for gy in range(ny):
                for gx in range(nx):
                    v = y[:, a, gy, gx]
                    out[:, a, gy, gx, 0] = (v[:, 0] * 2 - 0.5 + gx) * s
                    out[:, a, gy, gx, 1] = (v[:, 1] * 2 - 0.5 + gy) * s
                    out[:, a, gy, gx, 2:4] = (v[:, 2:4] * 2) ** 2 * anchors[a] * s
                    out[:, a, gy, gx, 4:] = v[:, 4:]
        z.append(out.view(b, -1, no))
    return torch.cat(z, 1)


def test_training_forward_returns_head_maps_and_taps_keyed_by_stride(model):
    model.train()
    out = model(torch.rand(2, 3, 64, 96))
    assert isinstance(out, DetectorOutput)
    assert [tuple(p.shape) for p in out.head] == [(2, 3, 8, 12, 8), (2, 3, 4, 6, 8), (2, 3, 2, 3, 8)]
    for s, (c_t, c_s) in model.tap_channels.items():
        assert tuple(out.teachers[s].shape) == (2, c_t, 64 // s, 96 // s)
        assert tuple(out.students[s].shape) == (2, c_s, 64 // s, 96 // s)


def test_forward_wiring_equals_ultralytics_graph_and_taps_are_the_design_layers(model):
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        ref = reference_forward(model, x)
    for got, want in zip(out.head, ref[24], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for s, layer in {8: 15, 16: 13, 32: 10}.items():
        torch.testing.assert_close(out.teachers[s], ref[layer], rtol=0, atol=0)
    for s, layer in {8: 17, 16: 20, 32: 23}.items():
        torch.testing.assert_close(out.students[s], ref[layer], rtol=0, atol=0)
        torch.testing.assert_close(out.head_inputs[s], ref[layer], rtol=0, atol=0)


@pytest.mark.parametrize(("taps", "teachers", "students"), [
    ("pan_to_fpn", {8: 17, 16: 20, 32: 23}, {8: 15, 16: 13, 32: 10}),
    ("backbone_to_pan", {8: 4, 16: 6, 32: 9}, {8: 17, 16: 20, 32: 23}),
])
def test_each_tap_set_taps_its_documented_layers_and_the_head_inputs_stay(taps, teachers, students):
    torch.manual_seed(0)
    model = build_detector("yolov5n", num_classes=3, taps=taps).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        ref = reference_forward(model, x)
    for s in (8, 16, 32):
        torch.testing.assert_close(out.teachers[s], ref[teachers[s]], rtol=0, atol=0)
        torch.testing.assert_close(out.students[s], ref[students[s]], rtol=0, atol=0)
        torch.testing.assert_close(out.head_inputs[s], ref[{8: 17, 16: 20, 32: 23}[s]], rtol=0, atol=0)
        assert model.tap_channels[s] == (out.teachers[s].shape[1], out.students[s].shape[1])


def test_inference_raw_decodes_like_ultralytics_detect(model):
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        raw = model.inference_raw(x)
        maps = model(x).head
    assert raw.shape == (2, 3 * (8 * 8 + 4 * 4 + 2 * 2), 8)
    want = reference_decode(maps, model.model[24].anchors, (8, 16, 32))
    torch.testing.assert_close(raw, want, rtol=1e-6, atol=1e-4)


def test_taps_carry_gradients_to_the_backbone(model):
    model.train()
    out = model(torch.rand(1, 3, 64, 64))
    out.teachers[32].sum().backward()
    assert model.model[0].conv.weight.grad is not None
    assert model.model[0].conv.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_state_dict_round_trip_loads_strictly_and_reproduces_outputs(model):
    model.eval()
    torch.manual_seed(1)
    other = build_detector("yolov5n", num_classes=3).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(other.inference_raw(x), model.inference_raw(x), rtol=0, atol=0)


def test_forward_exports_without_graph_breaks(model):
    """No hooks, no data-dependent Python control flow: torch.export captures the whole forward."""
    model.eval()
    exported = torch.export.export(model, (torch.rand(1, 3, 64, 64),)).module()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        got, want = exported(x), model(x)
    for g, w in zip(got.head, want.head, strict=True):
        torch.testing.assert_close(g, w)
    for s in (8, 16, 32):
        torch.testing.assert_close(got.teachers[s], want.teachers[s])
        torch.testing.assert_close(got.students[s], want.students[s])


def test_predict_returns_nms_filtered_boxes_scores_classes(model):
    model.eval()
    dets = model.predict(torch.rand(2, 3, 64, 64), conf=0.001, iou=0.6, max_det=5)
    assert len(dets) == 2
    for boxes, scores, classes in dets:
        assert boxes.shape[1] == 4 and len(boxes) == len(scores) == len(classes) <= 5
        assert classes.dtype == torch.int64 and (classes >= 0).all() and (classes < 3).all()
        assert (scores[:-1] >= scores[1:]).all()  # greedy NMS keeps score order


def test_an_input_size_off_the_stride_is_refused_with_its_shape(model):
    with pytest.raises(ValueError, match=r"multiples of 32, got \(1, 3, 64, 70\)"):
        model(torch.rand(1, 3, 64, 70))
