"""Layer tables of YOLOv3(-SPP), YOLOv4-CSP and YOLOv7(-tiny, x), in our own form.

One table per size: rows in WongKinYiu/yolov7's layer order (``cfg/baseline/yolov3.yaml``,
``yolov3-spp.yaml``, ``yolov4-csp.yaml``, ``cfg/training/yolov7-tiny.yaml``, ``yolov7.yaml``,
``yolov7x.yaml``; all at depth and width multiple 1.0), so that row i is their ``model.i`` and the state-dict
keys match. A row names its input layer(s) by absolute index (``src``), its block and the block's
arguments. YOLOv7's repeated patterns are written once as functions (``elan``, ``mp_down``) that emit
their rows; the layer numbers in the comments are upstream's.

Torch-free: ``model.py`` builds the modules; ``taps.py`` reads ``Table.tap_layers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from detectors.yolov7.head import ANCHORS_P5, ANCHORS_V3


@dataclass(frozen=True)
class Row:
    """One layer: ``block`` applied to the output(s) of layer(s) ``src`` (absolute indices).

    ``block`` is one of conv, repconv (args c_out, k, s), bottleneck (c_out, shortcut), csp_b, csp_c (c_out),
    sppcspc, spp (c_out), mp, sp (k), upsample, concat, detect, idetect. ``n``: repeats (a Bottleneck row
    becomes an nn.Sequential of n; a CSP row gets n inner Bottlenecks), as upstream's ``number`` column.
    """

    src: int | tuple[int, ...]
    block: str
    args: tuple = ()
    n: int = 1


@dataclass(frozen=True)
class Table:
    rows: tuple[Row, ...]
    anchors: tuple[tuple[float, ...], ...]
    act: str  # the activation of every Conv row: silu (upstream's default) or leaky (YOLOv7-tiny)
    # The maps a tap set may name (taps.py), by name -> layer; the digit is log2 of the stride:
    # C3/C4/C5 the backbone's outputs, F3/F4/F5 the top-down (FPN) maps, M3/M4/M5 YOLOv3's per-level
    # trunk maps before the output conv, P3/P4/P5 the Detect inputs.
    maps: dict[str, int] = field(default_factory=dict)

    @property
    def head_layers(self) -> tuple[int, ...]:
        """The Detect inputs, stride 8, 16, 32."""
        src = self.rows[-1].src
        assert isinstance(src, tuple)
        return src


def _maps(**layers: tuple[int, int, int]) -> dict[str, int]:
    """``c=(l8, l16, l32)`` -> ``{"C3": l8, "C4": l16, "C5": l32}``, and so on for each role letter."""
    return {f"{role.upper()}{level}": layer
            for role, trio in layers.items() for level, layer in zip((3, 4, 5), trio, strict=True)}


class _Rows:
    """Appends rows; a negative ``src`` is relative to the row being added (-1: the previous layer)."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def _abs(self, src: int | tuple[int, ...]) -> int | tuple[int, ...]:
        i = len(self.rows)
        if isinstance(src, tuple):
            return tuple(i + s if s < 0 else s for s in src)
        return i + src if src < 0 else src

    def add(self, block: str, *args, src: int | tuple[int, ...] = -1, n: int = 1) -> int:
        self.rows.append(Row(self._abs(src), block, tuple(args), n))
        return len(self.rows) - 1

    def conv(self, c: int, k: int = 1, s: int = 1, src: int = -1) -> int:
        return self.add("conv", c, k, s, src=src)

    def elan(self, branch: int, mid: int, depth: int, picks: tuple[int, ...], out: int) -> int:
        """YOLOv7's ELAN: two 1x1 branches, a chain of ``depth`` 3x3 convs on the second, the ``picks``
        (relative to the concat row) concatenated, a 1x1 conv to ``out``."""
        self.conv(branch)
        self.conv(branch, src=-2)
        for _ in range(depth):
            self.conv(mid, 3)
        self.add("concat", src=picks)
        return self.conv(out)

    def mp_down(self, c: int, extra: tuple[int, ...] = ()) -> int:
        """YOLOv7's down-sampling: max-pool + 1x1 beside 1x1 + strided 3x3, concatenated (with ``extra``)."""
        self.add("mp")
        self.conv(c)
        self.conv(c, src=-3)
        self.conv(c, 3, 2)
        return self.add("concat", src=(-1, -3, *extra))


def _yolov3(spp: bool) -> Table:
    r = _Rows()
    r.conv(32, 3)  # 0
    r.conv(64, 3, 2)  # 1  /2
    r.add("bottleneck", 64, True)
    r.conv(128, 3, 2)  # 3  /4
    r.add("bottleneck", 128, True, n=2)
    r.conv(256, 3, 2)  # 5  /8
    r.add("bottleneck", 256, True, n=8)  # 6  C3
    r.conv(512, 3, 2)  # 7  /16
    r.add("bottleneck", 512, True, n=8)  # 8  C4
    r.conv(1024, 3, 2)  # 9  /32
    r.add("bottleneck", 1024, True, n=4)  # 10 C5
    r.add("bottleneck", 1024, False)  # 11
    if spp:
        r.add("spp", 512)  # 12
    else:
        r.conv(512, 1)  # 12
    r.conv(1024, 3)
    r.conv(512, 1)  # 14 trunk /32
    r.conv(1024, 3)  # 15 P5 out
    r.conv(256, 1, src=-2)  # 16 lateral from 14
    r.add("upsample")  # 17 /16
    r.add("concat", src=(-1, 8))  # 18
    r.add("bottleneck", 512, False)
    r.add("bottleneck", 512, False)
    r.conv(256, 1)  # 21 trunk /16
    r.conv(512, 3)  # 22 P4 out
    r.conv(128, 1, src=-2)  # 23 lateral from 21
    r.add("upsample")  # 24 /8
    r.add("concat", src=(-1, 6))  # 25
    r.add("bottleneck", 256, False)  # 26 trunk /8
    r.add("bottleneck", 256, False, n=2)  # 27 P3 out
    r.add("detect", src=(27, 22, 15))  # 28
    return Table(tuple(r.rows), ANCHORS_V3, "silu",
                 _maps(c=(6, 8, 10), m=(26, 21, 14), p=(27, 22, 15)))


def _yolov4_csp() -> Table:
    r = _Rows()
    r.conv(32, 3)  # 0
    r.conv(64, 3, 2)  # 1  /2
    r.add("bottleneck", 64, True)
    r.conv(128, 3, 2)  # 3  /4
    r.add("csp_c", 128, n=2)
    r.conv(256, 3, 2)  # 5  /8
    r.add("csp_c", 256, n=8)  # 6  C3
    r.conv(512, 3, 2)  # 7  /16
    r.add("csp_c", 512, n=8)  # 8  C4
    r.conv(1024, 3, 2)  # 9  /32
    r.add("csp_c", 1024, n=4)  # 10 C5
    r.add("sppcspc", 512)  # 11 top of the FPN /32
    r.conv(256, 1)
    r.add("upsample")  # 13 /16
    r.conv(256, 1, src=8)  # 14 lateral from C4
    r.add("concat", src=(-1, -2))
    r.add("csp_b", 256, n=2)  # 16 FPN /16
    r.conv(128, 1)
    r.add("upsample")  # 18 FPN /8
    r.conv(128, 1, src=6)  # 19 lateral from C3
    r.add("concat", src=(-1, -2))
    r.add("csp_b", 128, n=2)  # 21 last top-down = first bottom-up map /8
    r.conv(256, 3)  # 22 P3 out
    r.conv(256, 3, 2, src=-2)  # 23 /16
    r.add("concat", src=(-1, 16))
    r.add("csp_b", 256, n=2)  # 25 PAN /16
    r.conv(512, 3)  # 26 P4 out
    r.conv(512, 3, 2, src=-2)  # 27 /32
    r.add("concat", src=(-1, 11))
    r.add("csp_b", 512, n=2)  # 29 PAN /32
    r.conv(1024, 3)  # 30 P5 out
    r.add("detect", src=(22, 26, 30))  # 31
    return Table(tuple(r.rows), ANCHORS_P5, "silu",
                 _maps(c=(6, 8, 10), f=(18, 16, 11), p=(22, 26, 30)))


def _yolov7() -> Table:
    r = _Rows()
    backbone_picks = (-1, -3, -5, -6)
    head_picks = (-1, -2, -3, -4, -5, -6)
    r.conv(32, 3)  # 0
    r.conv(64, 3, 2)  # 1  /2
    r.conv(64, 3)
    r.conv(128, 3, 2)  # 3  /4
    r.elan(64, 64, 4, backbone_picks, 256)  # 11
    r.mp_down(128)  # 16 /8
    r.elan(128, 128, 4, backbone_picks, 512)  # 24 C3
    r.mp_down(256)  # 29 /16
    r.elan(256, 256, 4, backbone_picks, 1024)  # 37 C4
    r.mp_down(512)  # 42 /32
    r.elan(256, 256, 4, backbone_picks, 1024)  # 50 C5
    r.add("sppcspc", 512)  # 51 top of the FPN /32
    r.conv(256, 1)
    r.add("upsample")  # 53 /16
    r.conv(256, 1, src=37)  # 54 lateral from C4
    r.add("concat", src=(-1, -2))
    r.elan(256, 128, 4, head_picks, 256)  # 63 FPN /16
    r.conv(128, 1)
    r.add("upsample")  # 65 FPN /8
    r.conv(128, 1, src=24)  # 66 lateral from C3
    r.add("concat", src=(-1, -2))
    r.elan(128, 64, 4, head_picks, 128)  # 75 last top-down = first bottom-up map /8
    r.mp_down(128, extra=(63,))  # 80 /16
    r.elan(256, 128, 4, head_picks, 256)  # 88 PAN /16
    r.mp_down(256, extra=(51,))  # 93 /32
    r.elan(512, 256, 4, head_picks, 512)  # 101 PAN /32
    r.add("repconv", 256, 3, 1, src=75)  # 102 P3 out
    r.add("repconv", 512, 3, 1, src=88)  # 103 P4 out
    r.add("repconv", 1024, 3, 1, src=101)  # 104 P5 out
    r.add("idetect", src=(102, 103, 104))  # 105
    return Table(tuple(r.rows), ANCHORS_P5, "silu",
                 _maps(c=(24, 37, 50), f=(65, 63, 51), p=(102, 103, 104)))


def _yolov7x() -> Table:
    r = _Rows()
    picks = (-1, -3, -5, -7, -8)
    r.conv(40, 3)  # 0
    r.conv(80, 3, 2)  # 1  /2
    r.conv(80, 3)
    r.conv(160, 3, 2)  # 3  /4
    r.elan(64, 64, 6, picks, 320)  # 13
    r.mp_down(160)  # 18 /8
    r.elan(128, 128, 6, picks, 640)  # 28 C3
    r.mp_down(320)  # 33 /16
    r.elan(256, 256, 6, picks, 1280)  # 43 C4
    r.mp_down(640)  # 48 /32
    r.elan(256, 256, 6, picks, 1280)  # 58 C5
    r.add("sppcspc", 640)  # 59 top of the FPN /32
    r.conv(320, 1)
    r.add("upsample")  # 61 /16
    r.conv(320, 1, src=43)  # 62 lateral from C4
    r.add("concat", src=(-1, -2))
    r.elan(256, 256, 6, picks, 320)  # 73 FPN /16
    r.conv(160, 1)
    r.add("upsample")  # 75 FPN /8
    r.conv(160, 1, src=28)  # 76 lateral from C3
    r.add("concat", src=(-1, -2))
    r.elan(128, 128, 6, picks, 160)  # 87 last top-down = first bottom-up map /8
    r.mp_down(160, extra=(73,))  # 92 /16
    r.elan(256, 256, 6, picks, 320)  # 102 PAN /16
    r.mp_down(320, extra=(59,))  # 107 /32
    r.elan(512, 512, 6, picks, 640)  # 117 PAN /32
    r.conv(320, 3, src=87)  # 118 P3 out (plain Conv: YOLOv7x has no RepConv)
    r.conv(640, 3, src=102)  # 119 P4 out
    r.conv(1280, 3, src=117)  # 120 P5 out
    r.add("idetect", src=(118, 119, 120))  # 121
    return Table(tuple(r.rows), ANCHORS_P5, "silu",
                 _maps(c=(28, 43, 58), f=(75, 73, 59), p=(118, 119, 120)))


def _yolov7_tiny() -> Table:
    r = _Rows()
    picks = (-1, -2, -3, -4)
    r.conv(32, 3, 2)  # 0  /2
    r.conv(64, 3, 2)  # 1  /4
    r.elan(32, 32, 2, picks, 64)  # 7
    r.add("mp")  # 8  /8
    r.elan(64, 64, 2, picks, 128)  # 14 C3
    r.add("mp")  # 15 /16
    r.elan(128, 128, 2, picks, 256)  # 21 C4
    r.add("mp")  # 22 /32
    r.elan(256, 256, 2, picks, 512)  # 28 C5
    # SPP-CSP written out as layers: 1x1 beside 1x1 -> max-pools 5/9/13 -> 1x1, concatenated, 1x1.
    r.conv(256, 1)  # 29
    r.conv(256, 1, src=-2)  # 30
    r.add("sp", 5)
    r.add("sp", 9, src=-2)
    r.add("sp", 13, src=-3)
    r.add("concat", src=picks)
    r.conv(256, 1)
    r.add("concat", src=(-1, -7))
    r.conv(256, 1)  # 37 top of the FPN /32
    r.conv(128, 1)
    r.add("upsample")  # 39 /16
    r.conv(128, 1, src=21)  # 40 lateral from C4
    r.add("concat", src=(-1, -2))
    r.elan(64, 64, 2, picks, 128)  # 47 FPN /16
    r.conv(64, 1)
    r.add("upsample")  # 49 FPN /8
    r.conv(64, 1, src=14)  # 50 lateral from C3
    r.add("concat", src=(-1, -2))
    r.elan(32, 32, 2, picks, 64)  # 57 last top-down = first bottom-up map /8
    r.conv(128, 3, 2)  # 58 /16
    r.add("concat", src=(-1, 47))
    r.elan(64, 64, 2, picks, 128)  # 65 PAN /16
    r.conv(256, 3, 2)  # 66 /32
    r.add("concat", src=(-1, 37))
    r.elan(128, 128, 2, picks, 256)  # 73 PAN /32
    r.conv(128, 3, src=57)  # 74 P3 out
    r.conv(256, 3, src=65)  # 75 P4 out
    r.conv(512, 3, src=73)  # 76 P5 out
    r.add("idetect", src=(74, 75, 76))  # 77
    return Table(tuple(r.rows), ANCHORS_V3, "leaky",
                 _maps(c=(14, 21, 28), f=(49, 47, 37), p=(74, 75, 76)))


TABLES: dict[str, Table] = {
    "yolov3": _yolov3(spp=False),
    "yolov3_spp": _yolov3(spp=True),
    "yolov4_csp": _yolov4_csp(),
    "yolov7_tiny": _yolov7_tiny(),
    "yolov7": _yolov7(),
    "yolov7x": _yolov7x(),
}
