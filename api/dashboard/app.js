/* The GAN service's dashboard: plain JavaScript, no build step, no third-party code.
 *
 * Views are hash routes: #/jobs (the job list, ?state= filter), #/jobs/<id> (one job: progress,
 * charts, samples, spec, actions) and #/new (the submit form). Everything comes from the API:
 * GET /presets and /openapi.json for the form, POST /jobs, GET /jobs, /jobs/{id}, .../metrics,
 * .../checkpoints, .../samples, and the job's Server-Sent Events for live updates.
 *
 * An API key (kept in localStorage) goes in an X-API-Key header on every request. EventSource
 * cannot send headers, so with a key the event stream is read with fetch() instead; either way
 * a stream that keeps failing falls back to polling every 2 s. Text from the API is only ever
 * inserted as text nodes (never as HTML).
 */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const POLL_MS = 2000;
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const STATES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];
const KEY_STORAGE = "gan.apiKey";

// --- DOM helpers ---------------------------------------------------------------------------------

/** An element with attributes (class, data-*, on* handlers as functions) and children (nodes or
 * strings, which become text nodes: nothing is ever parsed as HTML). */
function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.setAttribute("class", value);
    } else if (name in el && !(el instanceof SVGElement) && typeof value !== "string") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// --- formatting ----------------------------------------------------------------------------------

function num(value, digits = 3) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e5 || abs < 1e-3)) return value.toExponential(2);
  return Number(value.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

function int(value) {
  return value === null || value === undefined ? "–" : Math.round(value).toLocaleString("en-US");
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const t = Math.max(0, Math.round(seconds));
  if (t >= 3600) return `${Math.floor(t / 3600)}h ${String(Math.floor((t % 3600) / 60)).padStart(2, "0")}m`;
  if (t >= 60) return `${Math.floor(t / 60)}m ${String(t % 60).padStart(2, "0")}s`;
  return `${t}s`;
}

function ago(iso) {
  if (!iso) return "–";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

function shortId(id) {
  return id.slice(0, 8);
}

function fraction(job) {
  return job.total_steps ? Math.min(1, job.step / job.total_steps) : 0;
}

// --- the API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }

  /** A 422's messages by field name (the last element of each detail's loc). */
  get fields() {
    const out = {};
    if (Array.isArray(this.detail)) {
      for (const item of this.detail) {
        const loc = Array.isArray(item.loc) ? item.loc : [];
        const field = String(loc[loc.length - 1] ?? "");
        if (!(field in out)) out[field] = item.msg || "invalid";
      }
    }
    return out;
  }

  get text() {
    if (Array.isArray(this.detail)) {
      return Object.entries(this.fields).map(([f, m]) => `${f}: ${m}`).join("; ");
    }
    return typeof this.detail === "string" ? this.detail : `HTTP ${this.status}`;
  }
}

const api = {
  key() {
    return localStorage.getItem(KEY_STORAGE) || "";
  },

  headers(extra = {}) {
    const key = api.key();
    return key ? { "X-API-Key": key, ...extra } : { ...extra };
  },

  async request(method, path, { body, headers, signal } = {}) {
    const init = { method, headers: api.headers(headers), signal };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail ?? detail;
      } catch (_) { /* not JSON */ }
      const error = new ApiError(response.status, detail);
      if (response.status === 401) showBanner("This service needs an API key: enter yours at the top right.", "warn");
      throw error;
    }
    return response;
  },

  async json(path, options) {
    const response = await api.request(options?.method || "GET", path, options);
    return response.status === 204 ? null : response.json();
  },

  /** An image as an object URL (fetched with the key's header, which <img src> cannot send). */
  async imageUrl(path, signal) {
    const response = await api.request("GET", path, { signal });
    return { url: URL.createObjectURL(await response.blob()), headers: response.headers };
  },
};

let presetsCache = null;
function presets() {
  presetsCache ??= api.json("/presets").then((r) => r.presets).catch((e) => { presetsCache = null; throw e; });
  return presetsCache;
}

let schemaCache = null;
/** The JobSpec schema (ranges, choices, descriptions); {} when /openapi.json is not served. */
function jobSpecSchema() {
  schemaCache ??= fetch("/openapi.json")
    .then((r) => (r.ok ? r.json() : {}))
    .then((doc) => doc?.components?.schemas?.JobSpec?.properties || {})
    .catch(() => ({}));
  return schemaCache;
}

// --- banner and API key --------------------------------------------------------------------------

function showBanner(text, kind = "error") {
  const banner = document.getElementById("banner");
  replace(banner, h("span", {}, text), h("button", { class: "link", type: "button", onclick: hideBanner }, "Dismiss"));
  banner.className = `banner ${kind}`;
  banner.hidden = false;
}

function hideBanner() {
  document.getElementById("banner").hidden = true;
}

function setUpKeyForm() {
  const form = document.getElementById("keyform");
  const input = document.getElementById("apikey");
  input.value = api.key();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    hideBanner();
    route(); // reload the view with the new key
  });
}

// --- following a job: Server-Sent Events, or polling ---------------------------------------------

/** Follows job `id`: calls onEvent(type, data) for each event ("state", "progress",
 * "checkpoint", or "snapshot" with a whole job when polling) and onMode("live" | "polling" |
 * "ended"). Without an API key it uses EventSource; with one, fetch() reading the stream (so the
 * header can be sent). After repeated failures it polls GET /jobs/{id} every 2 s.
 *
 * A stream starts with the job's history, which may hold an earlier run's end (a resumed job):
 * the job has finished only when the stream ends after a final state. */
class JobFeed {
  constructor(id, onEvent, onMode) {
    this.id = id;
    this.onEvent = onEvent;
    this.onMode = onMode;
    this.stopped = false;
    this.lastId = null;
    this.lastState = null;
    this.failures = 0;
    this.source = null;
    this.abort = null;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.failures = 0;
    this.lastState = null;
    if (!api.key() && "EventSource" in window) this.eventSource();
    else this.fetchStream();
  }

  stop() {
    this.stopped = true;
    this.source?.close();
    this.abort?.abort();
    clearTimeout(this.timer);
  }

  deliver(type, data, id) {
    if (id) this.lastId = id;
    if (type === "state") this.lastState = data.state;
    this.failures = 0;
    this.onEvent(type, data);
  }

  finish() {
    this.stop();
    this.onMode("ended");
  }

  eventSource() {
    const after = this.lastId ? `?after=${encodeURIComponent(this.lastId)}` : "";
    const source = new EventSource(`/jobs/${encodeURIComponent(this.id)}/events${after}`);
    this.source = source;
    source.onopen = () => this.onMode("live");
    for (const type of ["state", "progress", "checkpoint"]) {
      source.addEventListener(type, (e) => this.deliver(type, JSON.parse(e.data), e.lastEventId));
    }
    source.onerror = () => {
      if (FINAL.has(this.lastState)) { // the service ended the stream: the job has finished
        source.close();
        this.finish();
        return;
      }
      // The browser reconnects by itself (with Last-Event-ID); give up after a few failures in a
      // row, or when it has given up (an HTTP error such as 404).
      this.failures += 1;
      if (source.readyState === EventSource.CLOSED || this.failures >= 3) {
        source.close();
        if (!this.stopped) this.poll();
      }
    };
  }

  async fetchStream() {
    while (!this.stopped) {
      this.abort = new AbortController();
      try {
        const headers = { Accept: "text/event-stream" };
        if (this.lastId) headers["Last-Event-ID"] = this.lastId;
        const response = await api.request("GET", `/jobs/${encodeURIComponent(this.id)}/events`, {
          headers, signal: this.abort.signal,
        });
        this.onMode("live");
        await this.read(response.body);
        if (this.stopped) return;
        if (FINAL.has(this.lastState)) { // the service ended the stream: the job has finished
          this.finish();
          return;
        }
        // Anything else was a dropped connection: reconnect where it left off.
      } catch (error) {
        if (this.stopped) return;
        this.failures += 1;
        if (error instanceof ApiError || this.failures >= 3 || !window.ReadableStream) {
          this.poll();
          return;
        }
      }
      if (!this.stopped) await new Promise((resolve) => { this.timer = setTimeout(resolve, POLL_MS); });
    }
  }

  /** Parses text/event-stream as it arrives: fields until a blank line, then dispatch. */
  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.stopped) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (line === "") {
          if (event.data.length) this.deliver(event.type, JSON.parse(event.data.join("\n")), event.id);
          if (this.stopped) return;
          event = { type: "message", data: [], id: null };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(text);
          else if (field === "event") event.type = text;
          else if (field === "id") event.id = text;
        }
      }
    }
  }

  poll() {
    this.onMode("polling");
    const tick = async () => {
      if (this.stopped) return;
      try {
        const job = await api.json(`/jobs/${encodeURIComponent(this.id)}`);
        this.onEvent("snapshot", job);
        if (FINAL.has(job.state)) {
          this.finish();
          return;
        }
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          this.onEvent("gone", null);
          this.finish();
          return;
        }
      }
      this.timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }
}

// --- SVG line charts -----------------------------------------------------------------------------

/** Round tick values covering [lo, hi]. */
function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((v) => v >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** A line chart of `series` ([{key, name}]) over `points` (objects with a `step`): an element
 * with a legend (which shows the values under the pointer) and an SVG. `log` plots log10 y. */
function lineChart({ title, series, points, log = false, note = "", empty = "No data yet." }) {
  const W = 560, H = 210, M = { l: 52, r: 14, t: 10, b: 26 };
  const legendValues = series.map(() => h("span", { class: "legend-value" }));
  const legend = h("div", { class: "legend" }, series.map((ser, i) =>
    h("span", { class: "legend-item" }, h("i", { class: `swatch c${i}` }), ser.name, " ", legendValues[i])));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title, "data-chart": title.toLowerCase() });
  const figure = h("figure", { class: "card chart-card" },
    h("figcaption", {}, h("div", {}, h("strong", {}, title), note ? h("span", { class: "muted small" }, ` ${note}`) : null), legend), svg);

  const usable = (v) => v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0);
  const rows = points.filter((p) => series.some((ser) => usable(p[ser.key])));
  if (!rows.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, class: "chart-empty", "text-anchor": "middle" }, empty));
    return figure;
  }
  const ty = (v) => (log ? Math.log10(v) : v);
  const ys = rows.flatMap((p) => series.map((ser) => p[ser.key]).filter(usable).map(ty));
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.06;
  y0 -= pad; y1 += pad;
  const x0 = rows[0].step, x1 = rows[rows.length - 1].step === x0 ? x0 + 1 : rows[rows.length - 1].step;
  const X = (step) => M.l + ((step - x0) / (x1 - x0)) * (W - M.l - M.r);
  const Y = (v) => M.t + (1 - (ty(v) - y0) / (y1 - y0)) * (H - M.t - M.b);
  const Yraw = (t) => M.t + (1 - (t - y0) / (y1 - y0)) * (H - M.t - M.b);

  const grid = s("g", { class: "grid" });
  for (const t of ticks(y0, y1, 4)) {
    const y = Yraw(t);
    grid.append(s("line", { x1: M.l, x2: W - M.r, y1: y, y2: y }));
    grid.append(s("text", { x: M.l - 6, y: y + 4, "text-anchor": "end" }, log ? num(10 ** t, 2) : num(t, 3)));
  }
  for (const t of ticks(x0, x1, 5)) {
    if (t < x0) continue;
    grid.append(s("text", { x: X(t), y: H - 8, "text-anchor": "middle" }, int(t)));
  }
  svg.append(grid);

  series.forEach((ser, i) => {
    // One path per series, lifting the pen over missing (non-finite) values.
    const commands = [];
    let pen = "M";
    for (const p of rows) {
      const v = p[ser.key];
      if (!usable(v)) { pen = "M"; continue; }
      commands.push(`${pen}${X(p.step).toFixed(1)} ${Y(v).toFixed(1)}`);
      pen = "L";
    }
    if (!commands.length) return;
    svg.append(s("path", { d: commands.join(" "), class: `series c${i}`, "data-series": ser.key }));
    const lone = rows.filter((p) => usable(p[ser.key]));
    if (lone.length === 1) svg.append(s("circle", { cx: X(lone[0].step), cy: Y(lone[0][ser.key]), r: 3, class: `dot c${i}` }));
  });

  // Hover: a cursor line and each series' value at the nearest step.
  const cursor = s("line", { class: "cursor", y1: M.t, y2: H - M.b, visibility: "hidden" });
  const stepLabel = s("text", { class: "cursor-label", y: M.t + 10, visibility: "hidden" });
  svg.append(cursor, stepLabel);
  const showLatest = () => series.forEach((ser, i) => {
    const last = [...rows].reverse().find((p) => usable(p[ser.key]));
    legendValues[i].textContent = last ? num(last[ser.key]) : "–";
  });
  showLatest();
  svg.addEventListener("pointermove", (event) => {
    const box = svg.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * W;
    const step = x0 + ((x - M.l) / (W - M.l - M.r)) * (x1 - x0);
    let best = rows[0];
    for (const p of rows) if (Math.abs(p.step - step) < Math.abs(best.step - step)) best = p;
    const cx = X(best.step);
    cursor.setAttribute("x1", cx);
    cursor.setAttribute("x2", cx);
    cursor.setAttribute("visibility", "visible");
    stepLabel.textContent = `step ${int(best.step)}`;
    stepLabel.setAttribute("x", Math.min(cx + 6, W - 90));
    stepLabel.setAttribute("visibility", "visible");
    series.forEach((ser, i) => { legendValues[i].textContent = num(best[ser.key]); });
  });
  svg.addEventListener("pointerleave", () => {
    cursor.setAttribute("visibility", "hidden");
    stepLabel.setAttribute("visibility", "hidden");
    showLatest();
  });
  return figure;
}

// --- shared pieces -------------------------------------------------------------------------------

function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, "data-state": state }, state);
}

function progressBar(job) {
  const bar = h("div", { class: `progress state-${job.state}`, role: "progressbar", "aria-valuemin": 0, "aria-valuemax": job.total_steps, "aria-valuenow": job.step });
  const fill = h("div", { class: "progress-fill" });
  fill.style.width = `${(100 * fraction(job)).toFixed(1)}%`;
  bar.append(fill);
  return bar;
}

function eta(job) {
  if (job.state === "running" && job.eta_seconds !== null) return `ETA ${duration(job.eta_seconds)}`;
  if (job.state === "queued") return "waiting for a worker";
  if (job.state === "cancelling") return "stopping at its next report";
  return "";
}

function bestFid(job) {
  const fid = job.best_metrics?.fid;
  return fid === undefined || fid === null ? "–" : num(fid);
}

// --- #/jobs: the job list ------------------------------------------------------------------------

function jobsView(params) {
  const state = params.get("state") || "";
  const filters = h("div", { class: "filters", role: "tablist" },
    ["", ...STATES].map((name) => h("a", {
      href: name ? `#/jobs?state=${name}` : "#/jobs",
      class: `chip${name === state ? " active" : ""}`,
      role: "tab",
    }, name || "all")));
  const body = h("div", { class: "job-list" }, h("p", { class: "muted" }, "Loading jobs…"));
  const updated = h("span", { class: "muted small" });
  const el = h("section", {},
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"), h("a", { class: "btn primary", href: "#/new" }, "New job")),
    h("div", { class: "toolbar" }, filters, updated),
    body);

  let timer = null;
  let stopped = false;
  async function refresh() {
    try {
      if (!document.hidden) await load(); // a hidden tab only asks again later
    } finally {
      // A list stays current by polling (a stream per job would use up the browser's connections).
      if (!stopped) timer = setTimeout(refresh, POLL_MS);
    }
  }
  async function load() {
    try {
      const query = state ? `?state=${encodeURIComponent(state)}&limit=100` : "?limit=100";
      const list = await api.json(`/jobs${query}`);
      if (stopped) return;
      replace(body,
        list.jobs.length ? jobTable(list.jobs) : emptyList(state),
        list.next_cursor ? h("p", { class: "muted small" }, "The newest 100 jobs; `gan jobs --limit N` lists more.") : null);
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (!stopped) replace(body, h("p", { class: "error-text" }, `Could not load jobs: ${error.text || error.message}`));
    }
  }
  refresh();
  return { el, stop() { stopped = true; clearTimeout(timer); } };
}

function emptyList(state) {
  return h("div", { class: "empty card" },
    h("p", {}, state ? `No ${state} jobs.` : "No jobs yet."),
    h("a", { class: "btn primary", href: "#/new" }, "Submit a training job"));
}

function jobTable(jobs) {
  const head = h("tr", {}, ["State", "Job", "Progress", "Images/s", "Best FID", "Warnings", "Created"].map((t) => h("th", {}, t)));
  const rows = jobs.map((job) => {
    const link = `#/jobs/${encodeURIComponent(job.id)}`;
    return h("tr", { class: "job-row", "data-job": job.id, onclick: (e) => { if (!e.target.closest("a")) location.hash = link; } },
      h("td", {}, stateBadge(job.state)),
      h("td", {},
        h("a", { href: link, class: "job-link" }, h("code", {}, shortId(job.id))),
        h("div", { class: "muted small" }, `${job.preset} · ${job.config.dataset} · ${job.config.arch}`)),
      h("td", { class: "progress-cell" },
        progressBar(job),
        h("div", { class: "muted small" }, `${int(job.step)} / ${int(job.total_steps)}`, job.state === "running" || job.state === "queued" || job.state === "cancelling" ? ` · ${eta(job)}` : "")),
      h("td", { class: "num" }, job.images_per_sec === null ? "–" : int(job.images_per_sec)),
      h("td", { class: "num" }, bestFid(job)),
      h("td", {}, job.warnings.length
        ? h("span", { class: "badge warn", title: job.warnings.map((w) => `${w.code} at step ${w.step}`).join("\n") }, `${job.warnings.length} ⚠`)
        : h("span", { class: "muted" }, "–")),
      h("td", { class: "muted small", title: job.created_at }, ago(job.created_at)));
  });
  return h("table", { class: "table" }, h("thead", {}, head), h("tbody", {}, rows));
}

// --- #/jobs/<id>: one job ------------------------------------------------------------------------

// Charts of every progress report, then of the evaluations (those with data are shown).
const CHARTS = [
  { title: "Losses", series: [{ key: "d_loss", name: "D" }, { key: "g_loss", name: "G" }] },
  { title: "D(x) vs D(G(z))", series: [{ key: "d_real", name: "D(x)" }, { key: "d_fake", name: "D(G(z))" }], note: "mean logits" },
  { title: "Gradient norms", series: [{ key: "d_grad_norm", name: "D" }, { key: "g_grad_norm", name: "G" }], log: true, note: "log scale" },
  { title: "Images per second", series: [{ key: "images_per_sec", name: "images/s" }] },
];
const EVAL_CHARTS = [
  { title: "FID", series: [{ key: "fid", name: "FID" }, { key: "fid_baseline", name: "real data" }], log: true, note: "lower is better" },
  { title: "Coverage", series: [{ key: "coverage", name: "classes" }], note: "classes the samples cover" },
  { title: "Precision, recall, diversity", series: [{ key: "precision", name: "precision" }, { key: "recall", name: "recall" }, { key: "diversity", name: "diversity" }, { key: "class_diversity", name: "within a class" }] },
  { title: "Mode KL", series: [{ key: "mode_kl", name: "mode KL" }, { key: "kl", name: "KL" }], note: "lower is better" },
  { title: "Modes", series: [{ key: "modes", name: "modes" }], note: "modes the samples cover" },
];

function jobView(id) {
  const path = `/jobs/${encodeURIComponent(id)}`;
  const title = h("h1", {}, "Job ", h("code", {}, shortId(id)));
  const badge = h("span", {});
  const mode = h("span", { class: "mode", title: "How this page gets updates" });
  const actions = h("div", { class: "actions" });
  const summary = h("section", { class: "card summary" });
  const alerts = h("div", {});
  const charts = h("section", { class: "charts" });
  const samples = h("section", { class: "card samples" });
  const spec = h("section", { class: "card spec" });
  const el = h("div", { class: "job-page" },
    h("a", { href: "#/jobs", class: "back" }, "← All jobs"),
    h("div", { class: "page-head" }, h("div", { class: "title" }, title, badge, mode), actions),
    summary, alerts, charts, samples, spec);

  let job = null;
  let points = [];
  let stopped = false;
  let metricsTimer = null;
  let metricsBusy = false;
  const sampler = sampleViewer(path, samples);

  let following = false;
  const feed = new JobFeed(id, onEvent, (m) => {
    mode.className = `mode ${m}`;
    mode.dataset.seen = `${mode.dataset.seen || ""} ${m}`.trim(); // how it was followed, for tests
    mode.textContent = { live: "● live", polling: "● polling every 2 s", ended: "" }[m] ?? "";
    if (m === "ended" && following) refreshAll(); // the final checkpoint and metrics
    following = m !== "ended";
  });

  function onEvent(type, data) {
    if (!job || stopped) return;
    if (type === "progress") Object.assign(job, data);
    else if (type === "state") Object.assign(job, { state: data.state, error: data.error ?? job.error });
    else if (type === "snapshot") job = data;
    else if (type === "gone") { showGone(); return; }
    const newest = sampler.newestStep() ?? -1;
    const step = type === "checkpoint" ? data.step : type === "state" ? null : data.checkpoint_step;
    if (step !== null && step !== undefined && step > newest) sampler.refresh(job);
    renderJob();
    scheduleMetrics();
  }

  function showGone() {
    replace(el, h("div", { class: "card empty" }, h("p", {}, `Job ${id} was deleted.`), h("a", { class: "btn", href: "#/jobs" }, "Back to the jobs")));
  }

  function renderJob() {
    replace(badge, stateBadge(job.state));
    title.replaceChildren("Job ", h("code", { title: job.id }, shortId(job.id)), h("span", { class: "muted preset-name" }, ` ${job.preset}`));
    renderActions();
    const metric = (label, value, extra) => h("div", { class: "stat" }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value), extra ? h("div", { class: "muted small" }, extra) : null);
    const best = job.best_metrics;
    replace(summary,
      h("div", { class: "summary-progress" },
        h("div", { class: "summary-line" },
          h("strong", { "data-field": "step" }, `${int(job.step)} / ${int(job.total_steps)} steps`),
          h("span", {}, `${(100 * fraction(job)).toFixed(0)}%`),
          h("span", { class: "muted" }, eta(job))),
        progressBar(job)),
      h("div", { class: "stats" },
        metric("Images/s", job.images_per_sec === null ? "–" : int(job.images_per_sec)),
        metric("ETA", job.state === "running" ? duration(job.eta_seconds) : "–"),
        metric("D loss", num(job.d_loss)),
        metric("G loss", num(job.g_loss)),
        metric("Checkpoint", job.checkpoint_step === null ? "none yet" : `step ${int(job.checkpoint_step)}`),
        metric("Best FID", bestFid(job), best?.step !== undefined && best?.step !== null ? `at step ${int(best.step)}` : null),
        metric("Latest eval", job.metrics_step === null ? "–" : evalText(job.metrics), job.metrics_step === null ? null : `step ${int(job.metrics_step)}`),
        metric("Attempts", int(job.attempts), job.worker ? `on ${job.worker}` : null)));
    replace(alerts,
      job.error ? h("div", { class: "alert error" }, h("strong", {}, "Failed: "), job.error) : null,
      job.warnings.length ? h("div", { class: "alert warn" },
        h("strong", {}, job.warnings.length === 1 ? "Warning" : `${job.warnings.length} warnings`),
        h("ul", {}, job.warnings.map((w) => h("li", {}, h("code", {}, w.code), ` at step ${int(w.step)}: `, w.message)))) : null);
  }

  function evalText(metrics) {
    const names = Object.keys(metrics || {});
    if (!names.length) return "–";
    const name = names.includes("fid") ? "fid" : names[0];
    return `${name} ${num(metrics[name])}`;
  }

  let actionsFor = null;
  function renderActions() {
    if (actionsFor === job.state) return; // keep the buttons (and a half-typed step count)
    actionsFor = job.state;
    const buttons = [];
    if (["queued", "running"].includes(job.state)) {
      buttons.push(h("button", { class: "btn", type: "button", "data-action": "cancel", onclick: () => act("POST", "/cancel") }, "Cancel"));
    }
    if (FINAL.has(job.state)) {
      const steps = h("input", { type: "number", class: "steps-input", min: 1, placeholder: job.state === "succeeded" ? "new total steps" : `steps (${job.total_steps})`, "aria-label": "train to this total of steps" });
      buttons.push(h("span", { class: "resume-group" }, steps, h("button", {
        class: "btn", type: "button", "data-action": "resume",
        onclick: () => act("POST", "/resume", steps.value ? { max_steps: Number(steps.value) } : undefined),
      }, "Resume")));
    }
    buttons.push(h("button", {
      class: "btn danger", type: "button", "data-action": "delete",
      onclick: () => { if (confirm(`Delete job ${job.id} and all its files?`)) act("DELETE", ""); },
    }, "Delete"));
    replace(actions, buttons);
  }

  async function act(method, suffix, body) {
    try {
      const result = await api.json(path + suffix, { method, body });
      hideBanner();
      if (method === "DELETE") { location.hash = "#/jobs"; return; }
      job = result;
      renderJob();
      if (suffix === "/resume") { feed.stop(); feed.start(); }
    } catch (error) {
      showBanner(`Could not ${suffix ? suffix.slice(1) : "delete"} the job: ${error.text || error.message}`);
    }
  }

  function scheduleMetrics() {
    if (metricsTimer || stopped) return;
    metricsTimer = setTimeout(async () => {
      metricsTimer = null;
      if (metricsBusy) { scheduleMetrics(); return; }
      metricsBusy = true;
      try { await loadMetrics(); } finally { metricsBusy = false; }
    }, 1000);
  }

  async function loadMetrics(full = false) {
    const last = points.length ? points[points.length - 1].step : null;
    // Only the new points, unless the run went back (a resume from an older checkpoint replaces
    // the points after it) or there are many (then an even pick of 2000).
    const whole = full || last === null || job.step < last || points.length > 4000;
    const query = whole ? "?max_points=2000" : `?since_step=${last}`;
    try {
      const result = await api.json(`${path}/metrics${query}`);
      if (stopped) return;
      points = query.startsWith("?since") ? points.concat(result.points) : result.points;
      renderCharts();
    } catch (_) { /* the next event retries */ }
  }

  function renderCharts() {
    const every = job?.config?.eval_every ?? 0;
    const measured = (ser) => points.some((p) => p[ser.key] !== undefined && p[ser.key] !== null);
    // The evaluation charts with data, each with only the series it has (class_diversity is
    // for conditional generators alone).
    const evaluations = EVAL_CHARTS.filter((c) => c.series.some(measured))
      .map((c) => ({ ...c, series: c.series.filter(measured) }));
    replace(charts,
      CHARTS.map((c) => lineChart({ ...c, points, empty: "No progress reported yet." })),
      evaluations.map((c) => lineChart({ ...c, points })),
      every > 0 && !evaluations.length
        ? lineChart({ ...EVAL_CHARTS[0], points: [], empty: `No evaluation yet: the first is at step ${int(every)}.` })
        : null,
      every === 0
        ? h("p", { class: "muted small charts-note" }, "Quality evaluations (FID, coverage, …) are off for this job: eval_every is 0.")
        : null);
  }

  async function refreshAll() {
    try {
      job = await api.json(path);
      if (stopped) return;
      renderJob();
      sampler.refresh(job);
      await loadMetrics(true);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) showGone();
    }
  }

  (async () => {
    try {
      job = await api.json(path);
    } catch (error) {
      replace(el, h("div", { class: "card empty" },
        h("p", {}, error.status === 404 ? `No job ${id} (or it belongs to another API key).` : `Could not load the job: ${error.text || error.message}`),
        h("a", { class: "btn", href: "#/jobs" }, "Back to the jobs")));
      return;
    }
    if (stopped) return;
    renderJob();
    renderCharts();
    renderSpec(spec, job);
    sampler.refresh(job);
    await loadMetrics(true);
    if (!stopped) {
      if (FINAL.has(job.state)) feed.onMode("ended");
      else feed.start();
    }
  })();

  return { el, stop() { stopped = true; feed.stop(); clearTimeout(metricsTimer); sampler.stop(); } };
}

/** The sample grid of a chosen checkpoint: a slider over the checkpoints on disk, a play button
 * (watch the digits form), and for a conditional model a row per class. */
function sampleViewer(path, container) {
  let job = null;
  let options = [];
  let index = -1;
  let follow = true; // stay on the newest checkpoint as new ones arrive
  let playing = null;
  let loadToken = 0;
  let refreshing = null;
  let stopped = false;
  const cache = new Map(); // query → object URL
  const img = h("img", { class: "grid-img", alt: "Sample grid", id: "sample-grid" });
  const caption = h("div", { class: "muted small" });
  const slider = h("input", { type: "range", min: 0, max: 0, step: 1, value: 0, class: "slider", "aria-label": "checkpoint", disabled: true });
  const stepLabel = h("strong", { class: "slider-label" }, "–");
  const play = h("button", { class: "btn small", type: "button", disabled: true }, "▶ Play");
  const rows = h("input", { type: "checkbox", checked: true });
  const rowsLabel = h("label", { class: "check", hidden: true }, rows, " a row per class");
  const ema = h("input", { type: "checkbox", checked: true });
  const emaLabel = h("label", { class: "check", hidden: true }, ema, " EMA generator");
  const placeholder = h("div", { class: "grid-placeholder muted" }, "No checkpoint yet: samples appear after the first one.");
  const hint = h("p", { class: "muted small" });
  container.append(
    h("div", { class: "section-head" }, h("h2", {}, "Samples"), h("div", { class: "controls" }, rowsLabel, emaLabel)),
    h("div", { class: "samples-body" },
      h("div", { class: "grid-frame" }, placeholder, img),
      h("div", { class: "slider-box" },
        h("div", { class: "slider-line" }, play, slider, stepLabel),
        caption, hint)));
  img.hidden = true;

  slider.addEventListener("input", () => {
    index = Number(slider.value);
    follow = index === options.length - 1;
    show();
  });
  play.addEventListener("click", () => (playing ? stopPlaying() : startPlaying()));
  rows.addEventListener("change", show);
  ema.addEventListener("change", show);

  function conditional() {
    return job && job.config.conditional && job.config.conditional !== "none";
  }

  async function refresh(newJob) {
    job = newJob;
    rowsLabel.hidden = !conditional();
    emaLabel.hidden = !(job.config.ema_decay > 0);
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        const listing = await api.json(`${path}/checkpoints`);
        if (stopped) return;
        const steps = listing.checkpoints.filter((c) => c.name !== "best");
        const best = listing.checkpoints.find((c) => c.name === "best");
        const bestStep = best ? best.step : null;
        options = steps.map((c) => ({ name: c.name, step: c.step, best: c.step === bestStep }));
        if (best && !steps.some((c) => c.step === best.step)) {
          options.push({ name: "best", step: best.step, best: true });
          options.sort((a, b) => a.step - b.step);
        }
        const previous = options[index];
        if (follow || index < 0) index = options.length - 1;
        else index = Math.max(0, options.findIndex((o) => previous && o.step === previous.step));
        slider.max = Math.max(0, options.length - 1);
        slider.value = index;
        slider.disabled = options.length < 2;
        play.disabled = options.length < 2;
        hint.textContent = options.length
          ? `${options.length} checkpoint${options.length === 1 ? "" : "s"} on disk (a run keeps its newest keep_checkpoints = ${job.config.keep_checkpoints}, plus its best).`
          : "";
        await show();
      } catch (_) { /* retried at the next checkpoint event */ } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  async function show() {
    const option = options[index];
    if (!option) {
      placeholder.hidden = false;
      img.hidden = true;
      stepLabel.textContent = "–";
      return;
    }
    stepLabel.textContent = `step ${int(option.step)}${option.best ? " ★ best" : ""}`;
    const perClass = conditional() && rows.checked;
    const query = `?checkpoint=${encodeURIComponent(option.name)}&seed=0${perClass ? "&label=rows&nrow=10" : "&n=64"}${ema.checked ? "" : "&ema=false"}`;
    const key = `${query}@${option.step}`;
    const token = ++loadToken;
    try {
      let url = cache.get(key);
      if (!url) {
        url = (await api.imageUrl(`${path}/samples${query}`)).url;
        if (stopped) { URL.revokeObjectURL(url); return; }
        cache.set(key, url);
        if (cache.size > 60) {
          const [oldest, oldUrl] = cache.entries().next().value;
          cache.delete(oldest);
          URL.revokeObjectURL(oldUrl);
        }
      }
      if (token !== loadToken) return; // a newer choice won
      await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = url; });
      img.hidden = false;
      placeholder.hidden = true;
      caption.textContent = perClass
        ? `One row per class, the same latent down each column (seed 0), from the checkpoint at step ${int(option.step)}.`
        : `64 samples (seed 0) from the checkpoint at step ${int(option.step)}: the same noise at every step, so you see the digits form.`;
    } catch (error) {
      if (token === loadToken) caption.textContent = `Could not draw samples: ${error.text || error.message}`;
    }
  }

  function startPlaying() {
    play.textContent = "❚❚ Pause";
    if (index >= options.length - 1) index = -1;
    const next = async () => {
      if (!playing) return;
      index += 1;
      if (index >= options.length) { stopPlaying(); return; }
      slider.value = index;
      follow = index === options.length - 1;
      await show();
      playing = setTimeout(next, 700);
    };
    playing = setTimeout(next, 0);
  }

  function stopPlaying() {
    clearTimeout(playing);
    playing = null;
    play.textContent = "▶ Play";
  }

  return {
    refresh,
    newestStep: () => (options.length ? Math.max(...options.map((o) => o.step)) : null),
    stop() {
      stopped = true;
      stopPlaying();
      for (const url of cache.values()) URL.revokeObjectURL(url);
      cache.clear();
    },
  };
}

/** The job's resolved config, with the fields that differ from its preset marked. */
async function renderSpec(container, job) {
  let base = {};
  try {
    base = (await presets()).find((p) => p.name === job.preset)?.config || {};
  } catch (_) { /* shown without marks */ }
  const entries = Object.entries(job.config);
  const changed = entries.filter(([k, v]) => k in base && base[k] !== v).length;
  const rows = entries.map(([name, value]) => {
    const differs = name in base && base[name] !== value;
    return h("tr", { class: differs ? "changed" : "" },
      h("th", {}, name),
      h("td", {}, h("code", {}, JSON.stringify(value))),
      h("td", { class: "muted small" }, differs ? `preset: ${JSON.stringify(base[name])}` : ""));
  });
  replace(container,
    h("details", {},
      h("summary", {}, h("h2", {}, "Resolved spec"), h("span", { class: "muted" }, ` preset ${job.preset}, ${changed} field${changed === 1 ? "" : "s"} overridden`)),
      h("table", { class: "table spec-table" }, h("tbody", {}, rows))));
}

// --- #/new: the submit form ----------------------------------------------------------------------

const ESSENTIALS = ["dataset", "max_steps", "eval_every", "checkpoint_every", "keep_checkpoints", "log_every", "seed"];
const GROUPS = [
  ["Data", ["image_size"]],
  ["Model", ["arch", "latent_dim", "width", "conditional", "spectral_norm"]],
  ["Loss", ["loss", "gp_weight", "clip_value", "r1_gamma", "r2_gamma", "reg_every", "acgan_weight"]],
  ["Stabilisers", ["label_smoothing", "instance_noise", "instance_noise_steps", "augment", "ema_decay", "grad_clip"]],
  ["Optimisation", ["batch_size", "d_steps", "lr_g", "lr_d", "beta1_g", "beta2_g", "beta1_d", "beta2_d"]],
  ["Speed", ["precision", "compile", "device"]],
  ["Quality and guards", ["eval_samples", "early_stop_evals", "max_rollbacks"]],
];
const DATASETS = ["mnist", "fashion-mnist", "kmnist", "cifar10", "stacked-mnist", "ring8", "grid25"];

function newJobView() {
  const el = h("section", { class: "new-job" }, h("div", { class: "page-head" }, h("h1", {}, "New training job")), h("p", { class: "muted" }, "Loading presets…"));
  let stopped = false;
  (async () => {
    let list, schema;
    try {
      [list, schema] = await Promise.all([presets(), jobSpecSchema()]);
    } catch (error) {
      replace(el, h("p", { class: "error-text" }, `Could not load the presets: ${error.text || error.message}`));
      return;
    }
    if (!stopped) replace(el, h("div", { class: "page-head" }, h("h1", {}, "New training job")), submitForm(list, schema));
  })();
  return { el, stop() { stopped = true; } };
}

/** How to edit field `name`: its kind (integer, number, string), choices and description, from
 * the OpenAPI schema, or guessed from the preset's value when the schema is not served. */
function fieldInfo(schema, name, value) {
  const prop = schema[name] || {};
  const variant = (prop.anyOf || [prop]).find((v) => v.type && v.type !== "null") || {};
  const guessed = typeof value === "number" ? (Number.isInteger(value) ? "integer" : "number") : "string";
  return { kind: variant.type || guessed, choices: variant.enum, hint: prop.description || "" };
}

function submitForm(presetList, schema) {
  const byName = Object.fromEntries(presetList.map((p) => [p.name, p]));
  let preset = byName.stable ? "stable" : presetList[0].name;
  const edited = new Set();
  const inputs = {};
  const errors = {};
  let idempotencyKey = newKey();

  const presetSelect = h("select", { name: "preset", id: "field-preset" }, presetList.map((p) => h("option", { value: p.name }, p.name)));
  presetSelect.value = preset;
  const presetDescription = h("p", { class: "muted preset-description" });
  const overview = h("p", { class: "overrides muted" });
  const formError = h("div", { class: "alert error", hidden: true });
  const submit = h("button", { class: "btn primary", type: "submit" }, "Start training");

  function field(name) {
    const value = byName[preset].config[name];
    const info = fieldInfo(schema, name, value);
    let input;
    if (info.choices) {
      input = h("select", { name, id: `field-${name}` }, info.choices.map((c) => h("option", { value: c }, c)));
    } else if (name === "dataset") {
      input = h("input", { name, id: `field-${name}`, type: "text", list: "datasets", spellcheck: "false" });
    } else {
      input = h("input", { name, id: `field-${name}`, type: "number", step: info.kind === "integer" ? "1" : "any" });
    }
    input.dataset.kind = info.kind;
    inputs[name] = input;
    errors[name] = h("div", { class: "field-error", id: `error-${name}`, role: "alert" });
    input.addEventListener("input", () => {
      edited.add(name);
      clearError(name);
      markChanged(name);
      idempotencyKey = newKey();
      describeOverrides();
    });
    return h("div", { class: "field", "data-field": name },
      h("label", { for: `field-${name}` }, name),
      input,
      info.hint ? h("div", { class: "hint" }, info.hint) : null,
      errors[name]);
  }

  const known = new Set([...ESSENTIALS, ...GROUPS.flatMap(([, names]) => names)]);
  const all = Object.keys(byName[preset].config);
  const groups = [...GROUPS, ["Other", all.filter((n) => !known.has(n))]]
    .map(([title, names]) => [title, names.filter((n) => all.includes(n))])
    .filter(([, names]) => names.length);
  const essentials = h("div", { class: "fields" }, ESSENTIALS.filter((n) => all.includes(n)).map(field));
  const details = groups.map(([title, names]) => h("details", { class: "group" }, h("summary", {}, title), h("div", { class: "fields" }, names.map(field))));

  function fill(keepEdits) {
    const config = byName[preset].config;
    presetDescription.textContent = byName[preset].description;
    for (const [name, input] of Object.entries(inputs)) {
      if (keepEdits && edited.has(name)) continue;
      edited.delete(name);
      input.value = config[name] === undefined ? "" : String(config[name]);
      markChanged(name);
    }
    describeOverrides();
  }

  function value(name) {
    const input = inputs[name];
    const text = input.value.trim();
    if (text === "") return undefined;
    if (input.dataset.kind === "integer" || input.dataset.kind === "number") {
      const n = Number(text);
      return Number.isFinite(n) ? n : text; // the service names what is wrong
    }
    return text;
  }

  function overrides() {
    const config = byName[preset].config;
    const out = {};
    for (const name of Object.keys(inputs)) {
      const v = value(name);
      if (v !== undefined && v !== config[name]) out[name] = v;
    }
    return out;
  }

  function markChanged(name) {
    const v = value(name);
    const changed = v !== undefined && v !== byName[preset].config[name];
    inputs[name].closest(".field")?.classList.toggle("changed", changed);
  }

  function describeOverrides() {
    const o = overrides();
    const names = Object.entries(o).map(([k, v]) => `${k}=${v}`);
    overview.textContent = names.length ? `Overrides: ${names.join(", ")}` : `The ${preset} preset as it is.`;
  }

  function clearError(name) {
    errors[name].textContent = "";
    inputs[name].removeAttribute("aria-invalid");
  }

  function showErrors(error) {
    const fields = error.fields;
    const general = [];
    let first = null;
    for (const [name, msg] of Object.entries(fields)) {
      const target = name === "preset" ? null : inputs[name];
      if (target) {
        errors[name].textContent = msg;
        target.setAttribute("aria-invalid", "true");
        const group = target.closest("details");
        if (group) group.open = true;
        first ??= target;
      } else {
        general.push(name && name !== "body" ? `${name}: ${msg}` : msg);
      }
    }
    if (!Object.keys(fields).length) general.push(error.text || error.message);
    formError.hidden = !general.length;
    formError.textContent = general.join("; ");
    first?.focus();
  }

  presetSelect.addEventListener("change", () => {
    preset = presetSelect.value;
    idempotencyKey = newKey();
    fill(true);
  });

  const form = h("form", { class: "card form", id: "job-form", novalidate: true },
    h("div", { class: "field preset-field" }, h("label", { for: "field-preset" }, "Preset"), presetSelect, presetDescription),
    h("h3", {}, "Essentials"),
    essentials,
    h("h3", {}, "All fields"),
    h("p", { class: "muted small" }, "Each starts at the preset's value; only the fields you change are sent."),
    details,
    h("datalist", { id: "datasets" }, DATASETS.map((d) => h("option", { value: d }))),
    formError,
    h("div", { class: "form-foot" }, overview, submit));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const name of Object.keys(inputs)) clearError(name);
    formError.hidden = true;
    submit.disabled = true;
    submit.textContent = "Submitting…";
    try {
      const job = await api.json("/jobs", {
        method: "POST",
        body: { preset, ...overrides() },
        headers: { "Idempotency-Key": idempotencyKey },
      });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (error) {
      if (error instanceof ApiError) showErrors(error);
      else showErrors(new ApiError(0, `Could not reach the service: ${error.message}`));
    } finally {
      submit.disabled = false;
      submit.textContent = "Start training";
    }
  });

  fill(false);
  return form;
}

function newKey() {
  if (window.crypto?.randomUUID) return crypto.randomUUID();
  return `dash-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// --- routing -------------------------------------------------------------------------------------

let current = null;

function route() {
  current?.stop();
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [pathPart, query = ""] = hash.split("?");
  const parts = pathPart.split("/").filter(Boolean);
  let nav = "jobs";
  if (parts[0] === "jobs" && parts[1]) {
    current = jobView(decodeURIComponent(parts[1]));
  } else if (parts[0] === "new") {
    current = newJobView();
    nav = "new";
  } else {
    current = jobsView(new URLSearchParams(query));
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === nav);
  }
  replace(document.getElementById("app"), current.el);
  window.scrollTo(0, 0);
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  setUpKeyForm();
  route();
});
