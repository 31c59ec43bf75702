// lab2048 viewer: plain JavaScript over the JSON API of lab2048.viewer.app (no build step).
"use strict";

let MOVES = [];  // the move names in UDLR order, from /api/info (engine conventions)
const SVG = "http://www.w3.org/2000/svg";
const state = { info: null, query: {}, offset: 0, limit: 40, total: 0, run: null, step: 0,
  disagree: [], binsTimer: null };

const $ = (id) => document.getElementById(id);

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function fmt(x, digits = 0) {
  if (x === null || x === undefined) return "–";
  return x.toLocaleString("en-US", { maximumFractionDigits: digits,
    minimumFractionDigits: digits });
}

function el(tag, attrs = {}, text = "") {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function showMissing(id, text) {
  const p = $(id);
  p.hidden = !text;
  p.textContent = text || "";
}

// ---------------------------------------------------------------------------------------------
// Runs list

async function loadRuns() {
  const params = new URLSearchParams({ ...state.query, offset: state.offset,
    limit: state.limit });
  const page = await getJSON(`/api/runs?${params}`);
  state.total = page.total;
  const body = $("runs").tBodies[0];
  body.replaceChildren();
  for (const r of page.runs) {
    const tr = el("tr", { "data-run": r.id });
    for (const v of [r.id, fmt(r.score), r.highest_tile, fmt(r.steps),
      r.disagreement === null ? "–" : `${(100 * r.disagreement).toFixed(1)}%`,
      fmt(r.value_error)]) tr.append(el("td", {}, String(v)));
    if (state.run && state.run.id === r.id) tr.classList.add("current");
    tr.addEventListener("click", () => openRun(r.id, 0));
    body.append(tr);
  }
  const last = Math.min(state.offset + state.limit, state.total);
  $("page").textContent = `${state.total ? state.offset + 1 : 0}–${last} of ${state.total}`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = last >= state.total;
}

function readFilters() {
  const form = new FormData($("filters"));
  state.query = {};
  for (const [k, v] of form.entries()) if (v !== "") state.query[k] = v;
  state.offset = 0;
  loadRuns();
}

// ---------------------------------------------------------------------------------------------
// One run

async function openRun(id, step) {
  const run = await getJSON(`/api/runs/${id}`);
  state.run = run;
  const mm = run.policy ? run.policy.model_move : null;
  state.disagree = [];
  if (mm) mm.forEach((m, t) => { if (m >= 0 && m !== run.teacher_move[t]) state.disagree.push(t); });
  $("pick").hidden = true;
  $("run").hidden = false;
  $("scrubber").max = run.steps - 1;
  for (const tr of $("runs").tBodies[0].rows)
    tr.classList.toggle("current", Number(tr.dataset.run) === id);
  drawStrip();
  drawRails();
  setStep(Math.min(step, run.steps - 1));
}

function cells(hex, mask) {
  // 16 exponents, cell 0 in the most significant nibble; mask bit i marks cell i as 2^16
  const out = [];
  for (let i = 0; i < 16; i++) {
    const e = parseInt(hex[i], 16);
    out.push((mask >> i) & 1 ? 16 : e);
  }
  return out;
}

function drawBoard(t) {
  const run = state.run;
  const board = $("board");
  board.replaceChildren();
  for (const e of cells(run.boards[t], run.masks[t])) {
    const c = el("div", { class: "cell" + (e ? (e <= 11 ? ` t${e}` : " big") : "") },
      e ? String(2 ** e) : "");
    board.append(c);
  }
}

function drawMoves(t) {
  const run = state.run;
  const body = $("moves").tBodies[0];
  body.replaceChildren();
  const probs = run.policy ? run.policy.move_probs[t] : null;
  const q = run.value ? run.value.q[t] : null;
  const model = run.policy ? run.policy.model_move[t] : -1;
  for (let a = 0; a < 4; a++) {
    const legal = (run.legal[t] >> a) & 1;
    const tr = el("tr", { class: legal ? "" : "illegal" });
    if (run.teacher_move[t] === a) tr.classList.add("teacher");
    if (model === a) tr.classList.add("model");
    tr.append(el("td", { class: "name" }, MOVES[a]));
    tr.append(el("td", {}, !legal ? "illegal" : run.has_branch_evs
      ? fmt(run.branch_evs[t][a], 3) : "not logged"));
    const cell = el("td");
    const box = el("span", { class: "barbox" });
    const p = probs ? probs[a] : null;
    box.append(el("span", { class: "bar policy-bar",
      style: `width:${p === null ? 0 : Math.round(100 * p)}px` }));
    cell.append(box, document.createTextNode(p === null ? "–" : p.toFixed(3)));
    tr.append(cell);
    tr.append(el("td", {}, q ? fmt(q[a], 1) : "–"));
    body.append(tr);
  }
  const missing = run.missing.policy || (run.value ? "" : run.missing.value);
  showMissing("policy-missing", missing);
}

function drawInfo(t) {
  const run = state.run;
  const lines = [`run ${run.id} · <b id="step-label">step ${t}</b> of ${run.steps}`,
    `teacher: <b>${MOVES[run.teacher_move[t]]}</b>`];
  if (run.policy && run.policy.model_move[t] >= 0) {
    const m = run.policy.model_move[t];
    const agree = m === run.teacher_move[t] ? "agrees" : "<b>disagrees</b>";
    lines.push(`model: <b>${MOVES[m]}</b> (${agree})`);
  }
  if (run.returns) lines.push(`reward ${fmt(run.returns.reward[t])}`);
  $("stepinfo").innerHTML = lines.join("<br>");
  const v = run.value ? run.value.value[t] : null;
  const g = run.returns ? run.returns.return_raw[t] : null;
  const parts = [];
  if (v !== null) parts.push(`<span class="legend-v">V = ${fmt(v)}</span>`);
  if (g !== null) parts.push(`<span class="legend-g">G = ${fmt(g)}</span>`);
  if (v !== null && g !== null) parts.push(`error V − G = <b id="value-error">${fmt(v - g)}</b>`);
  const gammas = [];
  if (run.gamma !== null) gammas.push(`head γ ${run.gamma}`);
  if (run.returns) gammas.push(`returns γ ${run.returns.gamma}`);
  if (run.gamma !== null && run.returns && run.gamma !== run.returns.gamma)
    gammas.push("<b>(γ differ)</b>");
  $("rails-info").innerHTML = `step ${t}: ${parts.join(" · ")} <small>${gammas.join(", ")}</small>`;
}

function setStep(t) {
  const run = state.run;
  if (!run) return;
  t = Math.max(0, Math.min(run.steps - 1, t));
  state.step = t;
  $("scrubber").value = t;
  drawBoard(t);
  drawMoves(t);
  drawInfo(t);
  moveCursors(t);
  clearTimeout(state.binsTimer);
  state.binsTimer = setTimeout(() => drawDist(t), 60);
  history.replaceState(null, "", `#run=${run.id}&step=${t}`);
}

// ---------------------------------------------------------------------------------------------
// Charts

function xOf(t, width) {
  const n = Math.max(1, state.run.steps - 1);
  return 40 + (width - 50) * t / n;
}

function drawStrip() {
  const svg = $("strip");
  svg.replaceChildren();
  const width = svg.clientWidth || 800;
  for (const t of state.disagree) {
    const x = xOf(t, width).toFixed(1);
    svg.append(el("svg:line", { class: "d", x1: x, x2: x, y1: 2, y2: 16 }));
  }
  svg.append(el("svg:line", { class: "cursor", id: "strip-cursor", y1: 0, y2: 18 }));
  svg.onclick = (ev) => jumpTo(ev, svg);
}

function polyline(values, cls, width, y) {
  const pts = [];
  values.forEach((v, t) => { if (v !== null) pts.push(`${xOf(t, width).toFixed(1)},${y(v).toFixed(1)}`); });
  return el("svg:polyline", { class: cls, points: pts.join(" "), "data-points": pts.length });
}

function drawRails() {
  const run = state.run;
  const svg = $("rails");
  svg.replaceChildren();
  const v = run.value ? run.value.value : null;
  const g = run.returns ? run.returns.return_raw : null;
  const missing = [];
  if (!v) missing.push(`predicted values: ${run.missing.value}`);
  if (!g) missing.push(`realised returns: ${run.missing.returns}`);
  showMissing("rails-missing", missing.join(" — "));
  if (!v && !g) { svg.setAttribute("height", 0); return; }
  svg.setAttribute("height", 220);
  const width = svg.clientWidth || 800, height = 220;
  const all = [...(v || []), ...(g || [])].filter((x) => x !== null);
  const lo = Math.min(0, ...all), hi = Math.max(1, ...all);
  const y = (x) => height - 20 - (height - 30) * (x - lo) / (hi - lo);
  for (const tick of [lo, (lo + hi) / 2, hi]) {
    svg.append(el("svg:text", { x: 2, y: y(tick) + 4 }, fmt(tick / 1000, 0) + "k"));
  }
  svg.append(el("svg:text", { x: 40, y: height - 4 }, "step 0"));
  svg.append(el("svg:text", { x: width - 60, y: height - 4 }, `step ${run.steps - 1}`));
  if (g) svg.append(polyline(g, "return", width, y));
  if (v) svg.append(polyline(v, "value", width, y));
  svg.append(el("svg:line", { class: "cursor", id: "rails-cursor", y1: 0, y2: height - 16 }));
  svg.onclick = (ev) => jumpTo(ev, svg);
}

function jumpTo(ev, svg) {
  const width = svg.clientWidth || 800;
  const n = Math.max(1, state.run.steps - 1);
  const x = ev.clientX - svg.getBoundingClientRect().left;
  setStep(Math.round((x - 40) / (width - 50) * n));
}

function moveCursors(t) {
  for (const id of ["strip-cursor", "rails-cursor"]) {
    const c = $(id);
    if (!c) continue;
    const x = xOf(t, c.ownerSVGElement.clientWidth || 800).toFixed(1);
    c.setAttribute("x1", x);
    c.setAttribute("x2", x);
  }
}

async function drawDist(t) {
  const svg = $("dist");
  svg.replaceChildren();
  const run = state.run;
  if (!run.value || !run.value.bins || run.value.value[t] === null) {
    const why = !run.value ? "no value annotations (see above)" : (!run.value.bins
      ? "the value head is scalar (mse): no distribution" : "this step is not annotated");
    showMissing("dist-missing", why);
    svg.setAttribute("height", 0);
    return;
  }
  const d = await getJSON(`/api/runs/${run.id}/bins?step=${t}`);
  if (state.step !== t || state.run !== run) return;
  showMissing("dist-missing", "");
  svg.setAttribute("height", 110);
  // the atoms with mass, on a log-spaced axis of points (atoms are uniform in h-space)
  const idx = d.probs.map((p, i) => [p, i]).filter(([p]) => p > 1e-4).map(([, i]) => i);
  const a = Math.max(0, idx[0] - 2), b = Math.min(d.probs.length - 1, idx[idx.length - 1] + 2);
  const width = 360, height = 110, n = b - a + 1, w = (width - 10) / n;
  const top = Math.max(...d.probs.slice(a, b + 1));
  for (let i = a; i <= b; i++) {
    const h = (height - 25) * d.probs[i] / top;
    svg.append(el("svg:rect", { x: 5 + (i - a) * w, y: height - 18 - h, width: Math.max(1, w - 0.5), height: h }));
  }
  svg.append(el("svg:text", { x: 5, y: height - 4 }, fmt(d.points[a])));
  svg.append(el("svg:text", { x: width - 60, y: height - 4 }, fmt(d.points[b])));
  const v = run.value.value[t];
  let k = a;
  while (k < b && d.points[k + 1] <= v) k++;
  const x = (5 + (k - a + 0.5) * w).toFixed(1);
  svg.append(el("svg:line", { class: "mark", x1: x, x2: x, y1: 0, y2: height - 18 }));
}

// ---------------------------------------------------------------------------------------------
// Keys and start

function onKey(ev) {
  if (!state.run || ev.target.tagName === "INPUT" && ev.target.type !== "range") return;
  const t = state.step;
  const keys = { ArrowLeft: t - 1, h: t - 1, ArrowRight: t + 1, l: t + 1, ArrowUp: t + 10,
    ArrowDown: t - 10, Home: 0, End: state.run.steps - 1 };
  let next = keys[ev.key];
  if (ev.key === "]") next = state.disagree.find((d) => d > t) ?? t;
  if (ev.key === "[") next = [...state.disagree].reverse().find((d) => d < t) ?? t;
  if (next === undefined) return;
  ev.preventDefault();
  setStep(next);
}

async function start() {
  state.info = await getJSON("/api/info");
  const i = state.info;
  MOVES = i.move_names;
  const name = (path) => path.replace(/\/+$/, "").split("/").pop();
  $("source").textContent = `${name(i.dataset)}: ${fmt(i.runs)} runs, ${fmt(i.steps)} steps` +
    (i.model ? ` · model ${name(i.model)}` : "");
  $("source").title = [i.dataset, i.annotations, i.model].filter(Boolean).join("\n");
  $("filters").addEventListener("change", readFilters);
  $("prev").onclick = () => { state.offset = Math.max(0, state.offset - state.limit); loadRuns(); };
  $("next").onclick = () => { state.offset += state.limit; loadRuns(); };
  $("scrubber").addEventListener("input", (ev) => setStep(Number(ev.target.value)));
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => { if (state.run) { drawStrip(); drawRails(); moveCursors(state.step); } });
  readFilters();
  const m = location.hash.match(/run=(\d+)(?:&step=(\d+))?/);
  if (m) openRun(Number(m[1]), Number(m[2] || 0));
}

start();
