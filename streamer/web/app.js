// streamer's live dashboard: polls the coordinator's JSON status once a second and
// renders the job list, the job graph, the task table, the failover timeline, the
// checkpoint history, recent errors and the workers. No framework, no build step.
// Every text from the server goes through textContent (never innerHTML).
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";

const state = {
  selected: decodeURIComponent(location.hash.slice(1)) || null,
  rates: {},        // job -> task -> {attempt, time, in, out, rateIn, rateOut}
  openDetails: new Set(),
  lastOk: 0,
};

// ------------------------------------------------------------------ helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function num(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (a >= 100 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(1);
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
}

function dur(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return Math.round(seconds * 1000) + " ms";
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 2 : 1) + " s";
  const m = Math.floor(seconds / 60);
  if (m < 60) return m + " min " + Math.round(seconds % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

function clock(epochSeconds, millis) {
  const d = new Date(epochSeconds * 1000);
  const t = d.toLocaleTimeString([], { hour12: false });
  return millis ? t + "." + String(d.getMilliseconds()).padStart(3, "0") : t;
}

function ago(epochSeconds) {
  return dur(Math.max(0, Date.now() / 1000 - epochSeconds)) + " ago";
}

function badge(text, kind) {
  return h("span", { class: "badge " + (kind || String(text).toLowerCase()) }, text);
}

async function getJSON(path) {
  const resp = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (resp.status === 401) throw new Error("not authorized: open the URL with ?token= once");
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}

function card(title, id, ...body) {
  return h("section", { class: "card", id }, h("h3", {}, title), ...body);
}

// ------------------------------------------------------------- task numbers
function taskCounts(m) {
  const src = m.source || {}, sink = m.sink || {};
  const chans = m.channels || [];
  const sum = (xs, k) => xs.reduce((a, x) => a + (x[k] || 0), 0);
  return {  // data records only (the channels also count lossless recovery's determinants)
    in: m.source ? src.records_in || 0 : m.records_processed || 0,
    out: m.sink ? sink.records_out || 0 : m.records_emitted || 0,
    queued: sum(chans, "queued"),
    lag: Object.values(src.lag || {}).reduce((a, x) => a + x, 0),
    hasLag: src.lag !== undefined,
  };
}

function updateRates(jobId, tasks) {
  const byTask = (state.rates[jobId] = state.rates[jobId] || {});
  for (const t of tasks) {
    const m = t.metrics || {};
    const c = taskCounts(m);
    const prev = byTask[t.task];
    const time = m.time || 0;
    if (!prev || prev.attempt !== t.attempt || c.in < prev.in || c.out < prev.out) {
      byTask[t.task] = { attempt: t.attempt, time, in: c.in, out: c.out, rateIn: null, rateOut: null };
    } else if (time > prev.time) {
      const span = time - prev.time;
      byTask[t.task] = {
        attempt: t.attempt, time, in: c.in, out: c.out,
        rateIn: (c.in - prev.in) / span, rateOut: (c.out - prev.out) / span,
      };
    }
  }
  return byTask;
}

function watermarkOf(m) {
  const wm = m.watermark;
  return typeof wm === "number" && wm > 0 && wm < 2 ** 53 ? wm / 1000 : null;
}

// ------------------------------------------------------------------- render
function renderJobs(jobs) {
  const list = document.getElementById("job-list");
  list.replaceChildren(...jobs.slice().reverse().map((j) =>
    h("li", { class: j.job_id === state.selected ? "selected" : "", "data-job": j.job_id },
      h("a", { href: "#" + encodeURIComponent(j.job_id) },
        h("div", { class: "job-name" }, j.name, " ", badge(j.state)),
        h("div", { class: "job-meta" },
          `${j.job_id} · ${j.strategy} · ${j.running}/${j.tasks} running · ${j.failovers} failovers`)))));
  if (!jobs.length) list.replaceChildren(h("li", { class: "muted" }, "none"));
}

function renderWorkers(workers) {
  workers = workers.slice().sort((a, b) => String(a.worker_id).localeCompare(String(b.worker_id)));
  const used = workers.reduce((a, w) => a + w.used, 0);
  const slots = workers.reduce((a, w) => a + w.slots, 0);
  document.getElementById("cluster-summary").textContent =
    `${workers.length} workers · ${used}/${slots} slots used`;
  const rows = workers.map((w) => {
    const age = w.heartbeat_age;
    const kind = age === undefined ? "" : age < 3 ? "ok" : age < 6 ? "warn" : "bad";
    return h("tr", {},
      h("td", {}, h("span", { class: "dot " + kind, title: "heartbeat" }), w.worker_id),
      h("td", { class: "muted" }, w.host),
      h("td", { class: "num" }, `${w.used}/${w.slots}`),
      h("td", { class: "num muted" }, age === undefined ? "" : dur(age)));
  });
  document.getElementById("workers").replaceChildren(
    h("tr", {}, h("th", {}, "id"), h("th", {}, "host"), h("th", {}, "slots"), h("th", {}, "beat")),
    ...rows);
}

function renderJob(status) {
  const main = document.getElementById("job");
  const rates = updateRates(status.job_id, status.tasks);
  const totalIn = status.tasks.reduce((a, t) =>
    a + (t.metrics && t.metrics.source ? (rates[t.task].rateIn || 0) : 0), 0);
  const totalOut = status.tasks.reduce((a, t) =>
    a + (t.metrics && t.metrics.sink ? (rates[t.task].rateOut || 0) : 0), 0);
  const running = status.tasks.filter((t) => t.state === "RUNNING").length;
  const uptime = (status.ended_at || Date.now() / 1000) - status.started_at;
  const header = h("div", { class: "job-header" },
    h("div", {},
      h("h1", {}, status.name, " ", badge(status.state)),
      h("div", { class: "muted" },
        `${status.job_id} · ${status.job_ref} · strategy ${status.strategy} · up ${dur(uptime)}`)),
    h("div", { class: "stats" },
      stat("tasks running", `${running}/${status.tasks.length}`),
      stat("read from Kafka", num(totalIn) + "/s"),
      stat("written to Kafka", num(totalOut) + "/s"),
      stat("failovers", String(status.failovers.length)),
      stat("checkpoints", String((status.checkpoints || {}).completed || 0))));
  const parts = [header];
  if (status.failure_reason) {
    parts.push(h("div", { class: "alert" }, "Failure: ", status.failure_reason));
  }
  const kafka = status.kafka || { reachable: true };
  if (!kafka.reachable) {
    parts.push(h("div", { class: "alert", id: "kafka-alert" },
      `Kafka at ${kafka.bootstrap} unreachable for ${dur(kafka.unreachable_s)} `,
      `(${(kafka.roles || []).join(", ")}: ${(kafka.tasks || []).join(", ")})`,
      kafka.last_error ? h("div", { class: "small" }, kafka.last_error) : null));
  }
  parts.push(
    card("Job graph", "graph", renderGraph(status, rates)),
    card("Tasks", "tasks", renderTasks(status, rates)),
    card("Failovers", "failovers", renderTimeline(status.failovers)),
    card("Checkpoints", "checkpoints", renderCheckpoints(status.checkpoints || {})),
    card("Recent errors", "errors", renderErrors(status)));
  main.replaceChildren(...parts);
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("div", { class: "stat-value" }, value),
    h("div", { class: "stat-label" }, label));
}

function pressureClass(r) {
  return r >= 0.5 ? "bad" : r >= 0.1 ? "warn" : "ok";
}

// ---------------------------------------------------------------- job graph
function renderGraph(status, rates) {
  const g = status.graph || { vertices: [], edges: [] };
  const layer = {};
  const incoming = {};
  for (const v of g.vertices) { layer[v.vertex_id] = 0; incoming[v.vertex_id] = []; }
  for (const e of g.edges) (incoming[e.target_vertex] || []).push(e.source_vertex);
  for (let i = 0; i < g.vertices.length; i++) {  // longest path from the sources
    for (const e of g.edges) {
      layer[e.target_vertex] = Math.max(layer[e.target_vertex], layer[e.source_vertex] + 1);
    }
  }
  const columns = [];
  for (const v of g.vertices) (columns[layer[v.vertex_id]] = columns[layer[v.vertex_id]] || []).push(v);
  const W = 190, H = 74, GX = 150, GY = 26, PAD = 16;
  const pos = {};
  const rowsMax = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const height = PAD * 2 + rowsMax * H + (rowsMax - 1) * GY;
  columns.forEach((col, ci) => {
    const colHeight = col.length * H + (col.length - 1) * GY;
    col.forEach((v, ri) => {
      pos[v.vertex_id] = { x: PAD + ci * (W + GX), y: (height - colHeight) / 2 + ri * (H + GY) };
    });
  });
  const width = PAD * 2 + columns.length * W + Math.max(0, columns.length - 1) * GX;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "graph" },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
  for (const e of g.edges) {
    const a = pos[e.source_vertex], b = pos[e.target_vertex];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const kafka = e.exchange === "kafka";
    svg.append(s("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
      class: "edge" + (kafka ? " kafka" : ""), "marker-end": "url(#arrow)" }));
    svg.append(s("text", { x: x1 + 10, y: y1 - 7, class: "edge-label" },  // by its source: no overlap
      `${e.partitioner} · ${e.exchange}`));
  }
  for (const v of g.vertices) {
    const p = pos[v.vertex_id];
    const tasks = status.tasks.filter((t) => t.vertex === v.vertex_id);
    const up = tasks.filter((t) => t.state === "RUNNING").length;
    const rate = tasks.reduce((a, t) => a + ((rates[t.task] || {}).rateIn || 0), 0);
    const bp = Math.max(0, ...tasks.map((t) => ((t.metrics || {}).backpressure || {}).ratio || 0));
    const health = up < tasks.length ? "down" : pressureClass(bp);
    svg.append(s("g", { class: "vertex " + health, "data-vertex": v.vertex_id },
      s("rect", { x: p.x, y: p.y, width: W, height: H, rx: 8 }),
      s("text", { x: p.x + 12, y: p.y + 22, class: "vertex-name" }, v.name || v.vertex_id),
      s("text", { x: p.x + W - 12, y: p.y + 22, class: "vertex-par", "text-anchor": "end" },
        `×${v.parallelism}`),
      s("text", { x: p.x + 12, y: p.y + 42, class: "vertex-meta" },
        `${up}/${tasks.length} running · ${num(rate)} in/s`),
      s("text", { x: p.x + 12, y: p.y + 60, class: "vertex-meta" },
        `back-pressure ${Math.round(bp * 100)}%`),
      s("title", {}, (v.operators || []).map((o) => `${o.name} (${o.kind})`).join(" → "))));
  }
  return h("div", { class: "graph-wrap" }, svg);
}

// -------------------------------------------------------------------- tasks
function renderTasks(status, rates) {
  const now = Date.now() / 1000;
  const head = h("tr", {}, ...["task", "state", "attempt", "worker", "in/s", "out/s",
    "back-pressure", "watermark", "queued", "lag", "state size"].map((c) => h("th", {}, c)));
  const rows = status.tasks.map((t) => {
    const m = t.metrics || {};
    const r = rates[t.task] || {};
    const c = taskCounts(m);
    const bp = (m.backpressure || {}).ratio || 0;
    const wm = watermarkOf(m);
    const st = m.state;
    const fresh = status.failovers.some((f) => f.task === t.task && now - f.detected_at < 10);
    return h("tr", { "data-task": t.task, "data-attempt": t.attempt, class: fresh ? "fresh" : "" },
      h("td", {}, h("strong", {}, t.task)),
      h("td", {}, badge(t.state)),
      h("td", { class: "num attempt" }, String(t.attempt)),
      h("td", {}, t.worker || "–"),
      h("td", { class: "num" }, num(r.rateIn)),
      h("td", { class: "num" }, num(r.rateOut)),
      h("td", {}, h("div", { class: "meter " + pressureClass(bp), title: `${(bp * 100).toFixed(1)}%` },
        h("div", { style: `width:${Math.round(bp * 100)}%` })),
      h("span", { class: "meter-label" }, Math.round(bp * 100) + "%")),
      h("td", { class: "num" }, wm === null ? "–" : h("span", { title: clock(wm, true) },
        clock(wm), h("span", { class: "muted" }, ` (${dur(Math.max(0, now - wm))} behind)`))),
      h("td", { class: "num" }, m.channels ? num(c.queued) : "–"),
      h("td", { class: "num" }, c.hasLag ? num(c.lag) : "–"),
      h("td", { class: "num" }, st ? `${num(st.keys)} keys · ${bytes(st.bytes)}` : "–"));
  });
  return h("div", { class: "scroll" }, h("table", { class: "tasks" }, h("thead", {}, head),
    h("tbody", {}, rows)));
}

// ---------------------------------------------------------- failover timeline
const PHASES = [
  ["detect", "kill_requested_at", "detected_at", "failure detected"],
  ["deploy", "detected_at", "deployed_at", "new attempt deployed"],
  ["restore", "deployed_at", "state_restored_at", "state restored"],
  ["start", "state_restored_at", "running_at", "running"],
  ["channels", "running_at", "channels_updated_at", "channels updated"],
];

function renderTimeline(failovers) {
  if (!failovers.length) return h("p", { class: "muted" }, "No failover yet.");
  const now = Date.now() / 1000;
  const shown = failovers.slice(-12).reverse();
  const spans = shown.map((f) => {
    const start = f.kill_requested_at || f.detected_at;
    const end = f.completed_at || (f.status === "in_progress" ? now : f.detected_at);
    return { f, start, end: Math.max(end, start) };
  });
  const scale = Math.max(0.001, ...spans.map((x) => x.end - x.start));
  const ticks = niceTicks(scale);
  const axis = h("div", { class: "tl-row tl-axis" }, h("div", { class: "tl-label" }, "time since failure"),
    h("div", { class: "tl-track" }, ...ticks.map((t) =>
      h("span", { class: "tl-tick", style: `left:${(t / scale) * 100}%` }, dur(t)))));
  const rows = spans.map(({ f, start, end }) => {
    const pct = (t) => ((t - start) / scale) * 100;
    const segs = [];
    for (const [cls, from, to, label] of PHASES) {
      const a = f[from], b = f[to];
      if (a && b && b >= a) {
        segs.push(h("div", { class: "tl-seg " + cls, style: `left:${pct(a)}%;width:${Math.max(0.4, pct(b) - pct(a))}%`,
          title: `${label}: +${dur(b - start)} (${dur(b - a)})` }));
      }
    }
    if (f.status === "in_progress") {
      const reached = Math.max(...PHASES.map(([, , to]) => f[to] || 0), f.detected_at);
      segs.push(h("div", { class: "tl-seg pending", style: `left:${pct(reached)}%;width:${Math.max(0.4, pct(now) - pct(reached))}%`,
        title: "in progress" }));
    }
    if (f.fell_back && f.fallback_at) {
      segs.push(h("div", { class: "tl-mark fallback", style: `left:${pct(f.fallback_at)}%`,
        title: "fell back: " + (f.fallback_reason || "") }));
    }
    const total = f.recovery_seconds !== undefined ? dur(f.recovery_seconds)
      : f.status === "in_progress" ? dur(now - start) + " so far" : "ended after " + dur(end - start);
    return h("div", { class: "tl-row", "data-failover": f.id, "data-status": f.status,
      "data-fell-back": f.fell_back ? "true" : "false" },
    h("div", { class: "tl-label" },
      h("div", {}, h("strong", {}, `#${f.id} ${f.task}`), " ", badge(f.strategy, "strategy"),
        f.fell_back ? badge("fell back", "fellback") : null),
      h("div", { class: "muted small" },
        `${clock(f.detected_at)} · ${total} · ${f.tasks_restarted.length} restarted · ${f.status.replace("_", " ")}`),
      f.fell_back && f.fallback_reason ? h("div", { class: "small fallback-reason" }, f.fallback_reason) : null,
      h("div", { class: "muted small cause", title: f.cause }, f.cause)),
    h("div", { class: "tl-track" }, ...segs));
  });
  const legend = h("div", { class: "legend" }, ...PHASES.map(([cls, , , label]) =>
    h("span", {}, h("i", { class: "tl-seg " + cls }), label === "failure detected" ? "detection" : "→ " + label)),
  h("span", {}, h("i", { class: "tl-mark fallback" }), "fell back to region restart"));
  return h("div", { class: "timeline" }, axis, ...rows, legend);
}

function niceTicks(max) {
  const steps = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300];
  const step = steps.find((x) => max / x <= 6) || 600;
  const out = [];
  for (let t = 0; t <= max + 1e-9; t += step) out.push(t);
  return out;
}

// -------------------------------------------------------------- checkpoints
function renderCheckpoints(cp) {
  const hist = cp.history || [];
  const completed = hist.filter((x) => x.outcome === "completed");
  const last = completed[completed.length - 1];
  const summary = h("div", { class: "stats small-stats" },
    stat("completed", String(cp.completed || 0)),
    stat("aborted", String(cp.aborted || 0)),
    stat("interval", cp.interval ? dur(cp.interval) : "off"),
    stat("in progress", cp.in_progress ? "#" + cp.in_progress : "–"),
    stat("last completed", last ? (last.at ? ago(last.at) : "#" + last.id) : "–"),
    stat("restored from", cp.restored_from ? "#" + cp.restored_from.checkpoint_id : "–"));
  if (!hist.length) return h("div", {}, summary, h("p", { class: "muted" }, "No checkpoint yet."));
  const maxSec = Math.max(0.001, ...hist.map((x) => x.seconds));
  const bw = 22, ch = 70;
  const chart = s("svg", { width: hist.length * bw + 4, height: ch + 16, class: "cp-chart" },
    ...hist.map((x, i) => {
      const bh = Math.max(2, (x.seconds / maxSec) * ch);
      return s("g", {}, s("rect", { x: 2 + i * bw, y: ch - bh, width: bw - 4, height: bh,
        class: "cp-bar " + x.outcome }),
      s("title", {}, `#${x.id} ${x.outcome} in ${dur(x.seconds)}${x.size ? ", " + bytes(x.size) : ""}${x.reason ? ": " + x.reason : ""}`));
    }),
    s("text", { x: 2, y: ch + 13, class: "cp-axis" }, `max ${dur(maxSec)}`));
  const rows = hist.slice(-8).reverse().map((x) => h("tr", {},
    h("td", { class: "num" }, "#" + x.id), h("td", {}, badge(x.outcome)),
    h("td", { class: "num" }, dur(x.seconds)), h("td", { class: "num" }, x.size ? bytes(x.size) : "–"),
    h("td", { class: "muted" }, x.at ? clock(x.at) : "–"), h("td", { class: "muted small" }, x.reason || "")));
  return h("div", {}, summary, h("div", { class: "cp" }, chart,
    h("table", { class: "cp-table" }, h("tr", {}, ...["id", "outcome", "duration", "size", "ended", ""]
      .map((c) => h("th", {}, c))), ...rows)));
}

// ------------------------------------------------------------------- errors
function errorEntries(t) {
  const out = [];
  for (const e of t.recent_errors || []) {
    if (typeof e === "string") { out.push({ message: e }); continue; }
    out.push({
      message: e.text || e.message || e.error || JSON.stringify(e),
      traceback: e.traceback, at: e.last_time || e.time || e.at, attempt: e.attempt,
      kind: [e.level, e.logger].filter(Boolean).join(" "), count: e.count,
    });
  }
  if (!out.length && t.error) out.push({ message: t.error, traceback: t.traceback, attempt: t.attempt });
  return out;
}

function logOf(t, attempt) {
  const log = (t.logs || []).find((l) => l.attempt === attempt);
  return log ? `${log.host ? log.host + ":" : ""}${log.path}` : null;
}

function renderErrors(status) {
  const items = [];
  for (const t of status.tasks) {
    for (const [i, e] of errorEntries(t).entries()) items.push({ t, e, key: `${t.task}/${i}/${e.at || ""}` });
  }
  if (!items.length) return h("p", { class: "muted" }, "No errors reported by the tasks.");
  items.sort((a, b) => (b.e.at || 0) - (a.e.at || 0));
  return h("ul", { class: "errors" }, ...items.slice(0, 30).map(({ t, e, key }) => {
    const summary = h("summary", {}, h("strong", {}, t.task),
      e.attempt !== undefined ? h("span", { class: "muted" }, ` attempt ${e.attempt}`) : null,
      e.at ? h("span", { class: "muted" }, ` · ${clock(e.at)}`) : null,
      e.kind ? h("span", { class: "muted" }, ` · ${e.kind}`) : null,
      e.count > 1 ? h("span", { class: "muted" }, ` · ×${e.count}`) : null,
      h("div", { class: "error-message" }, e.message));
    const log = logOf(t, e.attempt);
    const details = h("details", { "data-key": key, open: state.openDetails.has(key),
      ontoggle: (ev) => ev.target.open ? state.openDetails.add(key) : state.openDetails.delete(key) },
    summary, e.traceback ? h("pre", {}, e.traceback) : h("p", { class: "muted" }, "no traceback"),
    log ? h("p", { class: "muted small" }, "log: ", h("code", {}, log)) : null);
    return h("li", { "data-task": t.task }, details);
  }));
}

// --------------------------------------------------------------------- loop
function setLive(ok, text) {
  document.getElementById("live-dot").className = "dot " + (ok ? "ok" : "bad");
  document.getElementById("live-text").textContent = text;
}

async function poll() {
  try {
    const [jobs, workers] = await Promise.all([getJSON("/jobs"), getJSON("/workers")]);
    if (!state.selected || !jobs.some((j) => j.job_id === state.selected)) {
      const running = jobs.filter((j) => j.state === "RUNNING");
      const pick = running[running.length - 1] || jobs[jobs.length - 1];
      state.selected = pick ? pick.job_id : null;
    }
    renderJobs(jobs);
    renderWorkers(workers);
    if (state.selected) renderJob(await getJSON("/jobs/" + encodeURIComponent(state.selected)));
    state.lastOk = Date.now();
    setLive(true, "live · " + new Date().toLocaleTimeString([], { hour12: false }));
  } catch (err) {
    const since = state.lastOk ? ` (last update ${dur((Date.now() - state.lastOk) / 1000)} ago)` : "";
    setLive(false, String(err.message || err) + since);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

window.addEventListener("hashchange", () => {
  state.selected = decodeURIComponent(location.hash.slice(1)) || null;
});
poll();
