/* #/jobs/<id>: one job, followed live: its progress, charts, samples, spec and actions. */

import { ApiError, FINAL, api, presets } from "./api.js";
import { hideBanner, showBanner } from "./banner.js";
import { lineChart } from "./chart.js";
import { h, replace } from "./dom.js";
import { JobFeed } from "./feed.js";
import { duration, int, num, shortId } from "./format.js";
import { sampleViewer } from "./samples.js";
import { bestFid, eta, fraction, progressBar, stateBadge } from "./widgets.js";

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

export function jobView(id) {
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
