/* Pieces of a job that the job list and the job page both show. */

import { h } from "./dom.js";
import { duration, num } from "./format.js";

/** The share of its steps a job has done, 0 to 1. */
export function fraction(job) {
  return job.total_steps ? Math.min(1, job.step / job.total_steps) : 0;
}

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, "data-state": state }, state);
}

export function progressBar(job) {
  const bar = h("div", { class: `progress state-${job.state}`, role: "progressbar", "aria-valuemin": 0, "aria-valuemax": job.total_steps, "aria-valuenow": job.step });
  const fill = h("div", { class: "progress-fill" });
  fill.style.width = `${(100 * fraction(job)).toFixed(1)}%`;
  bar.append(fill);
  return bar;
}

export function eta(job) {
  if (job.state === "running" && job.eta_seconds !== null) return `ETA ${duration(job.eta_seconds)}`;
  if (job.state === "queued") return "waiting for a worker";
  if (job.state === "cancelling") return "stopping at its next report";
  return "";
}

export function bestFid(job) {
  const fid = job.best_metrics?.fid;
  return fid === undefined || fid === null ? "–" : num(fid);
}
