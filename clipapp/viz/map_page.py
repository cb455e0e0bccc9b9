"""The collection map drawn in a browser: one small self-contained script (no library) that paints the points on a
canvas coloured by cluster with the cluster names, shows the thumbnail and path on hover, opens the image on click,
and hands the paths inside a drawn lasso (the default) or a dragged box (the "Box" mode) to a callback.
`map_document` wraps it as a standalone page (`clipapp map --out map.html`); the Search tab's map view
(clipapp/app/ui/map_view.py) runs the same script in a gr.HTML.

What is drawn is bounded: at most MAX_DRAWN points (a uniform random sample, the same every time), so a 100k or 1M
collection draws like a 20k one; the --json output and the cluster sizes always cover every image. A lasso or a box
selects among the drawn points."""

from __future__ import annotations

import html
import json
from typing import Callable

import numpy as np

MAX_DRAWN = 20000  # a canvas repaint of 20k points is a few ms; the page payload stays ~2 MB
MAP_SCRIPT = r"""
function clipappMap(root, data, onSelect) {
  root.innerHTML = '';
  const W = Math.max(320, root.clientWidth || 800), H = 560, PAD = 12;
  const tools = document.createElement('div');
  tools.className = 'clipmap-tools'; tools.style.font = '12px sans-serif';
  let mode = 'lasso';
  const modeButtons = {};
  for (const [name, text] of [['lasso', 'Lasso'], ['box', 'Box']]) {
    const b = document.createElement('button');
    b.type = 'button'; b.textContent = text; b.className = 'clipmap-mode-' + name;
    b.style.cssText = 'margin:0 4px 4px 0;padding:2px 8px;border:1px solid #888;border-radius:3px;cursor:pointer';
    b.addEventListener('click', () => setMode(name));
    tools.appendChild(b); modeButtons[name] = b;
  }
  function setMode(name) {
    mode = name;
    for (const [n, b] of Object.entries(modeButtons)) {
      b.style.background = n === mode ? '#06c' : '#fff'; b.style.color = n === mode ? '#fff' : '#000';
      b.setAttribute('aria-pressed', String(n === mode));
    }
  }
  setMode(mode);
  const canvas = document.createElement('canvas');
  canvas.width = W; canvas.height = H; canvas.className = 'clipmap-canvas';
  canvas.style.cursor = 'crosshair'; canvas.style.border = '1px solid #ccc';
  const tip = document.createElement('div');
  tip.className = 'clipmap-tip';
  tip.style.cssText = 'position:fixed;display:none;pointer-events:none;background:#fff;border:1px solid #888;' +
    'padding:4px;font:12px sans-serif;z-index:1000;max-width:220px;word-break:break-all';
  const note = document.createElement('div');
  note.className = 'clipmap-note'; note.style.font = '12px sans-serif';
  note.textContent = data.note || '';
  root.appendChild(tools); root.appendChild(canvas); root.appendChild(tip); root.appendChild(note);
  const ctx = canvas.getContext('2d');
  const px = p => PAD + p.x * (W - 2 * PAD), py = p => PAD + (1 - p.y) * (H - 2 * PAD);
  const colour = c => `hsl(${(c * 137.5) % 360}, 65%, 45%)`;
  // a drag in progress: its mode, where it started, the lasso's path (canvas pixels), whether it moved
  let drag = null;
  function paint() {
    ctx.clearRect(0, 0, W, H);
    for (const p of data.points) { ctx.fillStyle = colour(p.cluster); ctx.fillRect(px(p) - 1.5, py(p) - 1.5, 3, 3); }
    ctx.font = 'bold 12px sans-serif'; ctx.fillStyle = '#000';
    for (const c of data.clusters) if (c.x !== undefined) ctx.fillText(c.name, px(c), py(c));
    if (!drag || !drag.moved) return;
    ctx.strokeStyle = '#06c'; ctx.lineWidth = 1.5;
    if (drag.mode === 'box') {
      ctx.strokeRect(drag.x0, drag.y0, drag.x1 - drag.x0, drag.y1 - drag.y0);
      return;
    }
    ctx.beginPath(); ctx.moveTo(drag.path[0][0], drag.path[0][1]);
    for (const [x, y] of drag.path) ctx.lineTo(x, y);
    ctx.closePath(); ctx.stroke(); ctx.fillStyle = 'rgba(0, 102, 204, 0.08)'; ctx.fill();
  }
  function nearest(mx, my) {
    let best = null, bestD = 36;
    for (const p of data.points) {
      const d = (px(p) - mx) ** 2 + (py(p) - my) ** 2;
      if (d < bestD) { bestD = d; best = p; }
    }
    return best;
  }
  // even-odd rule: a point is inside when a ray from it crosses the closed path an odd number of times
  function inside(x, y, path) {
    let odd = false;
    for (let i = 0, j = path.length - 1; i < path.length; j = i++) {
      const [xi, yi] = path[i], [xj, yj] = path[j];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) odd = !odd;
    }
    return odd;
  }
  function selected(d) {
    if (d.mode === 'box') {
      const [x0, x1] = [Math.min(d.x0, d.x1), Math.max(d.x0, d.x1)];
      const [y0, y1] = [Math.min(d.y0, d.y1), Math.max(d.y0, d.y1)];
      return data.points.filter(p => px(p) >= x0 && px(p) <= x1 && py(p) >= y0 && py(p) <= y1);
    }
    return d.path.length < 3 ? [] : data.points.filter(p => inside(px(p), py(p), d.path));
  }
  const at = e => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  canvas.addEventListener('mousedown', e => {
    const [x, y] = at(e);
    drag = {mode, x0: x, y0: y, x1: x, y1: y, path: [[x, y]], moved: false};
    tip.style.display = 'none';
  });
  canvas.addEventListener('mousemove', e => {
    const [x, y] = at(e);
    if (drag) {
      drag.x1 = x; drag.y1 = y;
      const [lx, ly] = drag.path[drag.path.length - 1];
      if (Math.abs(x - lx) + Math.abs(y - ly) > 2) drag.path.push([x, y]);
      drag.moved = drag.moved || Math.abs(x - drag.x0) + Math.abs(y - drag.y0) > 4;
      paint(); return;
    }
    const p = nearest(x, y);
    if (!p) { tip.style.display = 'none'; return; }
    tip.innerHTML = '';
    if (p.url) {
      const img = document.createElement('img');
      img.src = p.url; img.style.cssText = 'max-width:160px;max-height:160px;display:block';
      tip.appendChild(img);
    }
    tip.appendChild(document.createTextNode(p.path));
    tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 12) + 'px'; tip.style.display = 'block';
  });
  canvas.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  // on the window, so a lasso released outside the canvas still selects; one listener per root across redraws
  if (root.clipmapMouseUp) window.removeEventListener('mouseup', root.clipmapMouseUp);
  root.clipmapMouseUp = e => {
    const d = drag; drag = null;
    if (!d) return;
    if (!d.moved) { const p = nearest(...at(e)); if (p && p.url) window.open(p.url, '_blank'); paint(); return; }
    const picked = selected(d).map(p => p.path);
    paint();
    onSelect(picked);
  };
  window.addEventListener('mouseup', root.clipmapMouseUp);
  paint();
}
"""


def drawn_payload(result, image_url: Callable[[str], str], *, max_drawn: int = MAX_DRAWN, seed: int = 0) -> dict:
    """What the script draws: at most `max_drawn` points (uniform sample) with image URLs, and each cluster with
    its name, size and the mean position of its points (where its name is written)."""
    n = len(result.paths)
    keep = np.arange(n) if n <= max_drawn else np.sort(np.random.default_rng(seed).choice(n, max_drawn, replace=False))
    points = [
        {
            "path": result.paths[i],
            "url": image_url(result.paths[i]),
            "x": round(float(result.xy[i, 0]), 4),
            "y": round(float(result.xy[i, 1]), 4),
            "cluster": int(result.cluster[i]),
        }
        for i in keep.tolist()
    ]
    clusters = []
    for c in result.clusters:
        members = result.xy[result.cluster == c.id]
        centre = members.mean(axis=0) if len(members) else np.full(2, 0.5)
        clusters.append({"id": c.id, "name": c.name, "size": c.size, "x": float(centre[0]), "y": float(centre[1])})
    note = f"{n} images in {len(clusters)} clusters" + (
        f"; {len(keep)} drawn (a uniform sample)" if n > len(keep) else ""
    )
    return {
        "points": points,
        "clusters": clusters,
        "note": note + "; draw around images to select them (Lasso; Box: drag a box), click to open",
    }


def payload_json(payload: dict) -> str:
    """JSON safe to place inside HTML text (no <, >, & that the parser would read)."""
    text = json.dumps(payload, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def map_document(result, image_url: Callable[[str], str], *, max_drawn: int = MAX_DRAWN) -> str:
    """A standalone HTML page of the map; a lasso or box selection lists the selected paths in a text area, ready
    for `clipapp tag --from FILE` or `clipapp finetune --class NAME=...`."""
    payload = payload_json(drawn_payload(result, image_url, max_drawn=max_drawn))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>clipapp map</title></head>
<body style="font-family:sans-serif">
<h3>clipapp map ({html.escape(result.method)} layout)</h3>
<div id="map"></div>
<p>Selected (one path per line):</p><textarea id="selected" rows="8" cols="100"></textarea>
<script type="application/json" id="map-data">{payload}</script>
<script>{MAP_SCRIPT}
clipappMap(document.getElementById('map'), JSON.parse(document.getElementById('map-data').textContent),
  paths => {{ document.getElementById('selected').value = paths.join('\\n'); }});
</script></body></html>
"""
