#!/usr/bin/env python3
"""Draws doc/grafana-dashboard.json from real Prometheus scrapes, as a static HTML page
(there is no Grafana here; the screenshot in doc/ is this page rendered by headless chromium).

Usage: dashboard.py DASHBOARD_JSON SCRAPE_DIR OUT_HTML
  SCRAPE_DIR holds <unix time>.prom files, each one `curl /metrics` of OpenSIPS's prometheus
  module (examples/demo.sh writes them with DEMO_METRICS_DIR=dir).

Only the expressions the dashboard uses are understood: `metric{...}`, `rate(metric{...}[...])`
and `increase(metric{...}[$__range])`, with `node=""` (no node label) or `node!=""`.
"""
import html
import json
import os
import re
import sys

COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9"]


def load_scrapes(d):
    out = []
    for f in sorted(os.listdir(d), key=lambda n: float(n[:-5])):
        series = {}
        for line in open(os.path.join(d, f)):
            m = re.match(r'^(\w+)(?:\{node="([^"]*)"\})? (\S+)$', line.strip())
            if m:
                series[(m.group(1), m.group(2) or "")] = float(m.group(3))
        out.append((float(f[:-5]), series))
    return out


def evaluate(expr, scrapes):
    """{legend node: [(t, value)]} for one target expression."""
    m = re.match(r'^(?:(rate|increase)\()?(\w+)\{([^}]*)\}(?:\[[^\]]+\]\))?$', expr)
    fn, name, labels = m.groups()
    want_node = 'node!=""' in labels
    nodes = sorted({n for _, s in scrapes for (k, n) in s if k == name and bool(n) == want_node})
    res = {}
    for node in nodes:
        pts = [(t, s[(name, node)]) for t, s in scrapes if (name, node) in s]
        if fn == "rate":
            w = 4  # scrapes in the window (every 0.5 s: a 2 s rate)
            pts = [(pts[i][0], (pts[i][1] - pts[max(0, i - w)][1]) / max(pts[i][0] - pts[max(0, i - w)][0], 1e-9))
                   for i in range(1, len(pts))]
        elif fn == "increase":
            pts = [(pts[-1][0], pts[-1][1] - pts[0][1])]
        res[node] = pts
    return res


def legend(fmt, node):
    return fmt.replace("{{node}}", node)


def chart(panel, data, w, h, t0, t1):
    pad_l, pad_b, pad_t = 44, 34, 6
    cw, ch = w - pad_l - 10, h - pad_b - pad_t
    allv = [v for lines in data for _, pts in lines for _, v in pts] or [0]
    vmax = max(allv) or 1
    parts = [f'<svg width="{w}" height="{h}">']
    for i in range(5):
        y = pad_t + ch - ch * i / 4
        val = vmax * i / 4
        lab = f"{val:.0f}" if vmax >= 10 else f"{val:.1f}"
        parts.append(f'<line x1="{pad_l}" y1="{y}" x2="{pad_l + cw}" y2="{y}" stroke="#2c3235"/>'
                     f'<text x="{pad_l - 4}" y="{y + 4}" text-anchor="end">{lab}</text>')
    for i in range(0, int(t1 - t0) + 1, 10):
        x = pad_l + cw * i / max(t1 - t0, 1)
        parts.append(f'<text x="{x}" y="{pad_t + ch + 14}" text-anchor="middle">+{i}s</text>')
    k, leg = 0, []
    for target, lines in zip(panel["targets"], data):
        for node, pts in lines:
            col = COLORS[k % len(COLORS)]
            k += 1
            xy = " ".join(f"{pad_l + cw * (t - t0) / max(t1 - t0, 1):.1f},{pad_t + ch - ch * v / vmax:.1f}" for t, v in pts)
            parts.append(f'<polyline points="{xy}" fill="none" stroke="{col}" stroke-width="2"/>')
            leg.append(f'<span style="color:{col}">&#9644;</span> {html.escape(legend(target["legendFormat"], node))}')
    parts.append("</svg>")
    return "".join(parts) + f'<div class="leg">{"&nbsp;&nbsp; ".join(leg)}</div>'


def main():
    dash = json.load(open(sys.argv[1]))
    scrapes = load_scrapes(sys.argv[2])
    t0, t1 = scrapes[0][0], scrapes[-1][0]
    col, row = 56, 30
    body = []
    for p in dash["panels"]:
        g = p["gridPos"]
        x, y, w, h = g["x"] * col, g["y"] * row, g["w"] * col - 6, g["h"] * row - 6
        data = [sorted(evaluate(t["expr"], scrapes).items()) for t in p["targets"]]
        if p["type"] == "stat":
            v = data[0][0][1][-1][1] if data[0] and data[0][0][1] else 0
            inner = f'<div class="big">{v:.0f}</div>'
        elif p["type"] == "state-timeline":
            rows = []
            for node, pts in data[0]:
                segs = []
                for i, (t, v) in enumerate(pts):
                    tn = pts[i + 1][0] if i + 1 < len(pts) else t1
                    segs.append(f'<div style="left:{100 * (t - t0) / (t1 - t0):.2f}%;width:{100 * (tn - t) / (t1 - t0) + 0.3:.2f}%;'
                                f'background:{"#73bf69" if v else "#f2495c"}"></div>')
                rows.append(f'<div class="tl"><span>{html.escape(node)}</span><div class="bar">{"".join(segs)}</div></div>')
            inner = "".join(rows)
        else:
            inner = chart(p, data, w - 12, h - 48, t0, t1)
        body.append(f'<div class="panel" style="left:{x}px;top:{y}px;width:{w}px;height:{h}px">'
                    f'<div class="title">{html.escape(p["title"])}</div>{inner}</div>')
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"]) * row
    print(f"""<!doctype html><html><head><meta charset="utf-8"><style>
body{{margin:0;background:#111217;color:#ccccdc;font:12px sans-serif}}
h1{{font-size:15px;margin:8px 10px}} .sub{{color:#8e8e8e;font-size:11px;margin:0 10px 8px}}
.grid{{position:relative;margin:0 8px;height:{height}px}}
.panel{{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:6px;box-sizing:border-box;overflow:hidden}}
.title{{font-weight:600;margin-bottom:4px}} .big{{font-size:40px;color:#73bf69;text-align:center;margin-top:10px}}
svg text{{fill:#8e8e8e;font-size:10px}} .leg{{font-size:11px}}
.tl{{display:flex;align-items:center;margin:6px 0}} .tl span{{width:150px;font-size:11px}}
.bar{{position:relative;flex:1;height:16px;background:#222}} .bar div{{position:absolute;top:0;height:16px}}
</style></head><body><h1>{html.escape(dash["title"])}</h1>
<div class="sub">Rendered from {len(scrapes)} real scrapes of OpenSIPS /metrics taken during examples/demo.sh
(every 0.5 s, {t1 - t0:.0f} s); panels and queries from doc/grafana-dashboard.json. Not Grafana itself.</div>
<div class="grid">{"".join(body)}</div></body></html>""", file=open(sys.argv[3], "w"))


if __name__ == "__main__":
    main()
