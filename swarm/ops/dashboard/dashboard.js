// The swarm dashboard: polls the node's JSON API and draws plain SVG charts. No framework, no network but the node.
"use strict";

const REFRESH_MS = 2000;
const LOG_ROWS = 10;
const COLOURS = ["#2f6fde", "#1b7f3b", "#c77c02", "#b3261e", "#7b3fb5", "#0f8a8a", "#a34f7a", "#5b6475"];
const SVG_NS = "http://www.w3.org/2000/svg";

// A token for nodes bound beyond loopback travels in the URL fragment (#token=...), which browsers never send.
const token = new URLSearchParams(location.hash.slice(1)).get("token");

async function getJson(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (!response.ok) throw new Error(path + " answered " + response.status);
  return response.json();
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// series: [{name, colour, points: [[x, y], ...]}]; draws axes, ticks and one polyline per series.
function drawLineChart(svg, series, yMin, yMax) {
  const width = svg.clientWidth || 600, height = svg.clientHeight || 200;
  const pad = { left: 44, right: 10, top: 8, bottom: 22 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const all = series.flatMap(s => s.points);
  svg.dataset.points = String(all.length);
  svg.dataset.series = String(series.filter(s => s.points.length).length);
  if (all.length === 0) {
    svg.appendChild(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no committed rounds yet"));
    return;
  }
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const lo = yMin !== undefined ? yMin : Math.min(...ys), hiRaw = yMax !== undefined ? yMax : Math.max(...ys);
  const hi = hiRaw > lo ? hiRaw : lo + 1;
  const sx = x => pad.left + (x - x0) / (x1 - x0) * (width - pad.left - pad.right);
  const sy = y => height - pad.bottom - (y - lo) / (hi - lo) * (height - pad.top - pad.bottom);
  svg.appendChild(el("line", { class: "axis", x1: pad.left, y1: height - pad.bottom, x2: width - pad.right, y2: height - pad.bottom }));
  svg.appendChild(el("line", { class: "axis", x1: pad.left, y1: pad.top, x2: pad.left, y2: height - pad.bottom }));
  for (let i = 0; i <= 4; i++) {
    const y = lo + (hi - lo) * i / 4;
    svg.appendChild(el("text", { x: pad.left - 4, y: sy(y) + 3, "text-anchor": "end" }, y.toFixed(2)));
  }
  svg.appendChild(el("text", { x: pad.left, y: height - 6 }, "round " + x0));
  svg.appendChild(el("text", { x: width - pad.right, y: height - 6, "text-anchor": "end" }, "round " + x1));
  for (const s of series) {
    if (!s.points.length) continue;
    const points = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    svg.appendChild(el("polyline", { points, stroke: s.colour, "data-series": s.name, "data-count": s.points.length }));
    for (const [x, y] of s.points) svg.appendChild(el("circle", { cx: sx(x), cy: sy(y), r: 2.5, fill: s.colour }));
  }
}

function setText(id, value) { document.getElementById(id).textContent = value; }
function fmt(value) { return value === null || value === undefined ? "-" : Number(value).toFixed(4); }

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map(cells => {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = cell.text;
      if (cell.cls) td.className = cell.cls;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function render(status, history, peers, log) {
  setText("swarm-id", status.swarm_id);
  setText("node-name", `${status.name} (${status.role})`);
  setText("round", status.round);
  setText("term", status.term);
  setText("leader", status.leader_name || "none");
  setText("loss", fmt(status.loss));
  setText("accuracy", fmt(status.accuracy));
  const privacy = status.privacy;
  document.getElementById("privacy-box").hidden = !privacy;
  if (privacy) {
    setText("privacy", `epsilon ${privacy.epsilon.toFixed(3)} of ${privacy.budget} (delta ${privacy.delta}, ` +
      `${privacy.rounds} rounds)` + (privacy.exhausted ? ": budget reached, not contributing" : ""));
  }
  const evaluated = history.filter(r => r.loss !== null);
  drawLineChart(document.getElementById("chart-loss"),
    [{ name: "loss", colour: COLOURS[0], points: evaluated.map(r => [r.round, r.loss]) }]);
  drawLineChart(document.getElementById("chart-accuracy"),
    [{ name: "accuracy", colour: COLOURS[1], points: evaluated.map(r => [r.round, r.accuracy]) }], 0, 1);
  const names = peers.map(p => p.name);
  const sampled = history.filter(r => r.reputation);
  const series = names.map((name, i) => ({
    name, colour: COLOURS[i % COLOURS.length],
    points: sampled.filter(r => name in r.reputation).map(r => [r.round, r.reputation[name]]),
  }));
  drawLineChart(document.getElementById("chart-reputation"), series, 0, 1);
  document.getElementById("reputation-legend").replaceChildren(...series.map(s => {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = s.colour;
    item.append(swatch, s.name);
    return item;
  }));
  fillTable("peers", peers.map(p => [
    { text: p.name + (p.self ? " (self)" : "") }, { text: p.reputation.toFixed(3) }, { text: p.rounds_included },
    { text: p.rejected },
    p.banned ? { text: "banned", cls: "bad" } : p.quarantined ? { text: "quarantined", cls: "bad" } : { text: "ok", cls: "good" },
  ]));
  fillTable("log", log.slice().reverse().map(r => [
    { text: r.round }, { text: r.term }, { text: r.digest.slice(0, 12), cls: "mono" }, { text: r.included.join(", ") },
    { text: (r.quarantined || []).join(", ") || "-" }, { text: r.certificate_signers.join(", ") },
    { text: r.state_hash.slice(0, 12), cls: "mono" },
  ]));
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const status = await getJson("/status");
    const start = Math.max(1, status.round - LOG_ROWS + 1);
    const [history, peers, log] = await Promise.all([
      getJson("/history?limit=1000"), getJson("/peers"), getJson(`/log?from=${start}&limit=${LOG_ROWS}`)]);
    render(status, history, peers, log);
    error.hidden = true;
    document.body.dataset.loaded = "true";
  } catch (exc) {
    error.textContent = "cannot read the node's API: " + exc.message;
    error.hidden = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
