/* #/new: the submit form. Everything it offers comes from the service: the presets (GET
 * /presets), each field's kind, range, choices, description and group (the JobSpec schema of
 * /openapi.json, "x-group"), and the datasets to train on (GET /datasets: those known by name
 * and the key's uploads). Only the fields changed from the preset are sent. */

import { ApiError, api, datasetChoices, jobSpecSchema, presets } from "./api.js";
import { h, replace } from "./dom.js";

const ESSENTIALS = "Essentials"; // the group shown first, unfolded
const OTHER = "Other"; // fields whose schema names no group (an older service's), last

export function newJobView() {
  const el = h("section", { class: "new-job" }, h("div", { class: "page-head" }, h("h1", {}, "New training job")), h("p", { class: "muted" }, "Loading presets…"));
  let stopped = false;
  (async () => {
    let list, schema, datasets;
    try {
      [list, schema, datasets] = await Promise.all([presets(), jobSpecSchema(), datasetChoices().catch(() => [])]);
    } catch (error) {
      replace(el, h("p", { class: "error-text" }, `Could not load the presets: ${error.text || error.message}`));
      return;
    }
    if (!stopped) replace(el, h("div", { class: "page-head" }, h("h1", {}, "New training job")), submitForm(list, schema, datasets));
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

/** The fields `names` by their schema's group, the groups in the order their first field
 * comes (the config's order), "Other" last. */
function groupFields(schema, names) {
  const groups = new Map();
  for (const name of names) {
    const group = schema[name]?.["x-group"] || OTHER;
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(name);
  }
  const other = groups.get(OTHER);
  groups.delete(OTHER);
  if (other) groups.set(OTHER, other);
  return groups;
}

/** The form; `datasets` are the dataset field's suggestions ([{value, label}]). */
function submitForm(presetList, schema, datasets) {
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

  const groups = groupFields(schema, Object.keys(byName[preset].config));
  const essentials = h("div", { class: "fields" }, (groups.get(ESSENTIALS) || []).map(field));
  groups.delete(ESSENTIALS);
  const details = [...groups].map(([title, names]) => h("details", { class: "group", "data-group": title }, h("summary", {}, title), h("div", { class: "fields" }, names.map(field))));

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
    h("datalist", { id: "datasets" }, datasets.map((d) => h("option", { value: d.value, label: d.label }))),
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
