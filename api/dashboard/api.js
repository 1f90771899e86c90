/* The service's HTTP API, as the views use it: JSON requests with the API key, errors as
 * ApiError, and what the form and the job list learn from the service itself (presets, the
 * OpenAPI schema's fields, groups and job states, the datasets to train on).
 *
 * An API key (kept in localStorage) goes in an X-API-Key header on every request. */

import { showBanner } from "./banner.js";

const KEY_STORAGE = "gan.apiKey";

export class ApiError extends Error {
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

export const api = {
  key() {
    return localStorage.getItem(KEY_STORAGE) || "";
  },

  /** Keeps `key` for every later request ("" forgets it). */
  setKey(key) {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
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
/** The presets of GET /presets ([{name, description, config}]), asked for once per page. */
export function presets() {
  presetsCache ??= api.json("/presets").then((r) => r.presets).catch((e) => { presetsCache = null; throw e; });
  return presetsCache;
}

let schemasCache = null;
/** The OpenAPI document's schemas; {} when /openapi.json is not served (it needs no key). */
function schemas() {
  schemasCache ??= fetch("/openapi.json")
    .then((r) => (r.ok ? r.json() : {}))
    .then((doc) => doc?.components?.schemas || {})
    .catch(() => ({}));
  return schemasCache;
}

/** The JobSpec schema's properties by field name: each field's kind, range or choices,
 * description, and form group ("x-group"). */
export async function jobSpecSchema() {
  return (await schemas()).JobSpec?.properties || {};
}

/** The states a job ends in (it may still be resumed from them): the JobOut schema's state
 * "x-final". Filled when the schema arrives; app.js waits for `statesKnown` before any view. */
export const FINAL = new Set();
export const statesKnown = schemas().then((s) => {
  for (const state of s.JobOut?.properties?.state?.["x-final"] || []) FINAL.add(state);
});

/** Every job state, in the order of the JobOut schema's enum; [] when it is not served. */
export async function jobStates() {
  return (await schemas()).JobOut?.properties?.state?.enum || [];
}

/** What the dataset field takes, from GET /datasets: [{value, label}] for the datasets known by
 * name, then the key's uploads (by id, labelled with their name), newest first. */
export async function datasetChoices() {
  const list = await api.json("/datasets");
  return [
    ...(list.builtin || []).map((d) => ({ value: d.name })),
    ...list.datasets.map((d) => ({ value: d.id, label: `${d.name} (uploaded, ${d.num_images} images)` })),
  ];
}
