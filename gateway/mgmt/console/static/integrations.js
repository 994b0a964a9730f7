// The Integrations tab: cloud-to-cloud integrations from OpenAPI 2 documents.  The list
// and "add" (upload a document, see every violation by JSON path); one integration's page
// (#/c/<cid>/integrations/<name>): its configuration as a form built from the document's
// x-exosite-config-parameters (secrets masked: only "set" or "not set" is ever shown),
// settings, health and its history, the sync/fetch jobs with their reports, a new document
// version, removal.
import {api, busy, checkbox, confirmDialog, download, field, fill, h, statusLine, table, timeEl, toast} from "./lib.js";
import {href} from "./nav.js";

const healthBadge = (hc) => (!hc ? h("span", {class: "pill"}, "not probed") : hc.healthy ? h("span", {class: "pill good"}, "healthy") : h("span", {class: "pill bad"}, "unhealthy"));

function violationsTable(violations) {
  return table([["JSON path", (v) => h("code", {}, v.path)], ["Problem", (v) => v.message]], violations,
    {caption: `${violations.length} violation${violations.length === 1 ? "" : "s"}`});
}

/** Document text from a file input or a textarea. */
function documentInput() {
  const area = h("textarea", {name: "document", rows: 8, spellcheck: false, class: "code", placeholder: "swagger: \"2.0\"\ninfo: …"});
  const file = h("input", {type: "file", accept: ".yaml,.yml,.json,text/yaml,application/json,text/plain"});
  file.addEventListener("change", async () => { if (file.files[0]) area.value = await file.files[0].text(); });
  return {area, nodes: [field("OpenAPI 2 document (YAML or JSON) file", file), field("…or paste it", area)]};
}

async function listView(ctx) {
  const base = `/connectors/${encodeURIComponent(ctx.cid)}/integrations`;
  const list = h("div", {id: "int-table"});
  const doc = documentInput();
  const result = h("div", {id: "int-result", "aria-live": "polite"});
  const status = statusLine();
  const form = h("form", {class: "stack", id: "int-add"},
    h("h3", {}, "Add an integration"),
    field("Name", h("input", {name: "name", required: true, pattern: "[a-z0-9_\\-]+", autocomplete: "off"}), "lower-case letters, digits, _ and -"),
    ...doc.nodes,
    checkbox("Allow plain http (development only)", "allow_insecure_http", false),
    h("div", {class: "toolbar"},
      h("button", {type: "button", class: "secondary", id: "int-validate"}, "Validate"),
      h("button", {type: "submit"}, "Add integration")),
    status, result);
  const insecure = () => form.elements.allow_insecure_http.checked;
  const needDocument = () => {
    if (doc.area.value.trim()) return false;
    fill(result, h("p", {class: "error", role: "alert"}, "Choose a document file or paste one first."));
    return true;
  };
  form.querySelector("#int-validate").addEventListener("click", (ev) => busy(ev.currentTarget, async () => {
    if (needDocument()) return;
    const r = await api("POST", `${base}/validate`, {document: doc.area.value, allow_insecure_http: insecure()});
    fill(result, r.valid
      ? h("p", {class: "ok"}, `Valid: ${r.operations.length} operations (${r.operations.join(", ")}).`)
      : [h("p", {class: "error"}, "The document is refused:"), violationsTable(r.violations)]);
  }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (needDocument()) return;
    busy(form.querySelector("button[type=submit]"), async () => {
      const name = form.elements.name.value.trim();
      try {
        await api("POST", base, {name, document: doc.area.value, allow_insecure_http: insecure()});
      } catch (e) {
        if (e.body?.violations) fill(result, h("p", {class: "error"}, e.detail), violationsTable(e.body.violations));
        else status.set(e.message, true);
        return;
      }
      toast(`integration ${name} added`);
      location.hash = href(["c", ctx.cid, "integrations", name]);
    });
  });

  async function refresh() {
    const items = (await api("GET", base, undefined, {signal: ctx.signal})).items;
    fill(list, table([
      ["Name", (i) => h("a", {href: href(["c", ctx.cid, "integrations", i.name])}, i.name)],
      ["API", (i) => `${i.title} ${i.api_version}`],
      ["Health", (i) => healthBadge(i.health)],
      ["Configuration", (i) => (i.missing_config.length ? h("span", {class: "error"}, `missing ${i.missing_config.join(", ")}`) : "complete")],
      ["Document", (i) => `version ${i.doc_version}`, "narrow-hide"],
      ["Updated", (i) => timeEl(i.updated, true)],
    ], items, {empty: "no integrations yet"}));
  }
  fill(ctx.panel, h("h2", {class: "visually-hidden"}, "Integrations"),
    h("p", {class: "muted"}, "Third-party REST APIs, described by OpenAPI 2 documents; each asset becomes a device."),
    list, h("div", {class: "box"}, form));
  await refresh();
  return {refresh};
}

function configForm(ctx, base, view, after) {
  const params = view.config_parameters;
  if (!params.length) return h("p", {class: "muted"}, "The document declares no configuration parameters.");
  const status = statusLine();
  const controls = params.map((p) => {
    const value = view.config[p.name];
    let input;
    if (p.type === "boolean") input = h("input", {type: "checkbox", name: p.name, checked: value === true});
    else if (p.secret) input = h("input", {type: "password", name: p.name, autocomplete: "new-password", placeholder: p.set ? "set: type to replace" : "not set"});
    else input = h("input", {type: p.type === "string" ? "text" : "number", step: p.type === "integer" ? "1" : "any", name: p.name, value: value ?? "", autocomplete: "off"});
    const label = `${p.name}${p.required ? " (required)" : ""}${p.secret ? ", secret" : ""}`;
    const hint = [p.description, p.secret ? (p.set ? " · a value is set (never shown)" : " · no value yet") : ""].join("");
    return {p, input, node: field(label, input, hint)};
  });
  const form = h("form", {class: "stack", id: "int-config"}, controls.map((c) => c.node),
    h("div", {class: "toolbar"}, h("button", {type: "submit"}, "Save configuration")), status);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const values = {};
    for (const {p, input} of controls) {
      if (p.type === "boolean") { if (input.checked !== (view.config[p.name] === true)) values[p.name] = input.checked; continue; }
      const v = input.value;
      if (p.secret) { if (v) values[p.name] = v; continue; }
      const old = view.config[p.name];
      if (v === "" && old !== undefined) values[p.name] = null;
      else if (v !== "" && String(old ?? "") !== v) values[p.name] = p.type === "string" ? v : Number(v);
    }
    if (!Object.keys(values).length) { status.set("nothing changed"); return; }
    busy(form.querySelector("button[type=submit]"), async () => {
      try { await api("PATCH", `${base}/config`, {values}); } catch (e) { status.set(e.message, true); return; }
      toast("configuration saved");
      await after();
    });
  });
  return form;
}

let settingsSchema = null;
/** The IntegrationSettings schema from the API's own OpenAPI document (types of the
 * settings form's fields). */
async function integrationSettingsSchema() {
  if (!settingsSchema) {
    settingsSchema = fetch("/api/v1/openapi.json").then((r) => r.json())
      .then((doc) => doc.components?.schemas?.IntegrationSettings?.properties || {})
      .catch(() => ({}));
  }
  return settingsSchema;
}

/** "number", "integer", "string", "strings" (a list of strings) or "json" for a property. */
function kindOf(prop, value) {
  const types = (prop?.anyOf || [prop || {}]).map((x) => x.type).filter((x) => x && x !== "null");
  if (types.length === 1 && ["number", "integer", "string"].includes(types[0])) return types[0];
  if (types.length === 1 && types[0] === "array" && prop.items?.type === "string") return "strings";
  if (!types.length && prop && Object.keys(prop).length <= 1 && value !== null && typeof value !== "object") return typeof value === "number" ? "number" : "string";
  return "json";
}

async function settingsForm(ctx, base, view, after) {
  const schema = await integrationSettingsSchema();
  const status = statusLine();
  const controls = Object.entries(view.settings).map(([k, v]) => {
    const kind = kindOf(schema[k], v);
    let input, hint = null;
    if (kind === "number" || kind === "integer") input = h("input", {type: "number", step: kind === "integer" ? "1" : "any", name: k, value: v});
    else if (kind === "string" && k === "ca_bundle") input = h("textarea", {name: k, rows: 3, class: "code", spellcheck: false}, v ?? "");
    else if (kind === "string") input = h("input", {name: k, value: v ?? "", autocomplete: "off"});
    else if (kind === "strings") { input = h("input", {name: k, value: (v || []).join(", "), autocomplete: "off"}); hint = "comma-separated"; }
    else { input = h("textarea", {name: k, rows: 2, class: "code", spellcheck: false}, v == null ? "" : JSON.stringify(v, null, 1)); hint = "JSON (empty: none)"; }
    return {k, v, kind, input, node: field(k.replaceAll("_", " "), input, hint)};
  });
  const form = h("form", {class: "grid-form", id: "int-settings"}, controls.map((c) => c.node),
    h("div", {class: "toolbar full"}, h("button", {type: "submit"}, "Save settings")), status);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const settings = {};
    for (const {k, v, kind, input} of controls) {
      const text = input.value.trim();
      let nv;
      if (kind === "number" || kind === "integer") nv = Number(text);
      else if (kind === "string") nv = text === "" && v === null ? null : input.value;
      else if (kind === "strings") nv = text.split(",").map((x) => x.trim()).filter(Boolean);
      else {
        try { nv = text === "" ? null : JSON.parse(text); } catch (_) { status.set(`${k}: not JSON`, true); return; }
      }
      if (JSON.stringify(nv) !== JSON.stringify(v)) settings[k] = nv;
    }
    if (!Object.keys(settings).length) { status.set("nothing changed"); return; }
    busy(form.querySelector("button[type=submit]"), async () => {
      try { await api("PATCH", `${base}/config`, {settings}); } catch (e) { status.set(e.message, true); return; }
      toast("settings saved");
      await after();
    });
  });
  return form;
}

const runSummary = (r) => (r ? `${r.status}: ${r.seen} seen, ${r.created} created, ${r.updated} updated, ${r.failed} failed, ${r.vanished} vanished${r.error ? ` — ${r.error}` : ""}` : "never run");

async function detailView(ctx) {
  const name = ctx.segs[3];
  const base = `/connectors/${encodeURIComponent(ctx.cid)}/integrations/${encodeURIComponent(name)}`;
  const summary = h("div", {id: "int-summary"});
  const config = h("div", {id: "int-config-box"});
  const settings = h("div", {id: "int-settings-box"});
  const health = h("div", {id: "int-health"});
  const jobs = h("div", {id: "int-jobs"});
  const docResult = h("div", {"aria-live": "polite"});
  const doc = documentInput();
  let first = true;

  const docForm = h("form", {class: "stack", id: "int-doc"}, ...doc.nodes,
    h("div", {class: "toolbar"},
      h("button", {type: "submit"}, "Upload new version"),
      h("button", {type: "button", class: "secondary", onclick: (ev) => busy(ev.currentTarget, () => download(`${base}/document`, `${name}.yaml`))}, "Download current")),
    docResult);
  docForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!doc.area.value.trim()) { fill(docResult, h("p", {class: "error", role: "alert"}, "Choose a document file or paste one first.")); return; }
    busy(docForm.querySelector("button[type=submit]"), async () => {
      try {
        const v = await api("PUT", `${base}/document`, {document: doc.area.value, allow_insecure_http: false});
        fill(docResult, h("p", {class: "ok"}, `Document version ${v.doc_version} stored.`));
      } catch (e) {
        fill(docResult, h("p", {class: "error"}, e.detail), e.body?.violations ? violationsTable(e.body.violations) : null);
        return;
      }
      await refresh(true);
    });
  });

  async function refresh(forms = false) {
    const [v, hv, jv] = await Promise.all([
      api("GET", base, undefined, {signal: ctx.signal}),
      api("GET", `${base}/health?limit=20`, undefined, {signal: ctx.signal}),
      api("GET", `${base}/jobs`, undefined, {signal: ctx.signal}),
    ]);
    fill(summary,
      h("a", {href: href(["c", ctx.cid, "integrations"]), class: "back"}, "← Integrations"),
      h("h2", {}, name, " ", healthBadge(v.health)),
      h("p", {}, h("strong", {}, v.title), ` ${v.api_version} · document version ${v.doc_version}`, v.description ? ` · ${v.description}` : ""),
      h("dl", {class: "facts"},
        h("div", {}, h("dt", {}, "Base URL"), h("dd", {}, h("code", {}, v.base_url || "—"))),
        h("div", {}, h("dt", {}, "Health URL"), h("dd", {}, h("code", {}, v.health_url || "—"))),
        h("div", {}, h("dt", {}, "Operations"), h("dd", {}, v.operations.map((o) => o.operation_id).join(", ")))),
      v.missing_config.length ? h("p", {class: "error", role: "alert"}, `Missing configuration: ${v.missing_config.join(", ")}`) : null);
    if (first || forms) {
      fill(config, configForm(ctx, base, v, () => refresh(true)));
      fill(settings, await settingsForm(ctx, base, v, () => refresh(true)));
      first = false;
    }
    fill(health,
      h("div", {class: "toolbar"}, h("button", {type: "button", class: "secondary", id: "int-probe", onclick: (ev) => busy(ev.currentTarget, async () => {
        const hc = await api("POST", `${base}/health`);
        toast(hc.healthy ? "healthy" : `unhealthy: ${hc.detail}`, !hc.healthy);
        await refresh();
      })}, "Probe now")),
      table([
        ["Time", (c) => timeEl(c.timestamp)],
        ["State", (c) => [healthBadge(c), c.changed ? [" ", h("span", {class: "pill warn"}, "changed")] : null]],
        ["Answer", (c) => `${c.status_code == null ? "no answer" : `HTTP ${c.status_code}`} in ${c.latency_ms.toFixed(0)} ms${c.detail ? ` · ${c.detail}` : ""}`],
      ], hv.history, {caption: "Health history, newest first", empty: "no probes yet"}));
    const runs = await Promise.all(jv.jobs.map((j) => api("GET", `${base}/jobs/${j.job}/runs?limit=5`, undefined, {signal: ctx.signal})));
    fill(jobs, jv.jobs.map((j, i) => h("section", {class: "job", dataset: {job: j.job}},
      h("h4", {}, j.job, " ", h("small", {class: "muted"}, j.interval_s ? `every ${j.interval_s} s` : "manual only"), j.running ? h("span", {class: "pill warn"}, "running") : null),
      h("p", {class: "last-run"}, `Last run: ${runSummary(j.last)}`),
      h("button", {type: "button", class: "secondary small", "aria-label": `Run ${j.job} now`, onclick: (ev) => busy(ev.currentTarget, async () => {
        const r = await api("POST", `${base}/jobs/${j.job}`);
        toast(`${j.job}: ${runSummary(r)}`, r.status === "failed");
        await refresh();
      })}, "Run now"),
      table([
        ["Started", (r) => timeEl(r.started)],
        ["Trigger", (r) => r.trigger],
        ["Status", (r) => h("span", {class: `pill ${r.status === "ok" ? "good" : r.status === "failed" ? "bad" : "warn"}`}, r.status)],
        ["Report", (r) => [runSummary(r), r.errors.length ? h("ul", {}, r.errors.slice(0, 5).map((e) => h("li", {}, `${e.asset_id}: ${e.error}`))) : null]],
      ], runs[i].items, {caption: `Recent ${j.job} runs`, empty: "no runs yet"}))));
  }

  fill(ctx.panel, summary,
    h("section", {class: "box", "aria-labelledby": "h-cfg"}, h("h3", {id: "h-cfg"}, "Configuration"), config),
    h("section", {class: "box", "aria-labelledby": "h-health"}, h("h3", {id: "h-health"}, "Health"), health),
    h("section", {class: "box", "aria-labelledby": "h-jobs"}, h("h3", {id: "h-jobs"}, "Sync and fetch"), jobs),
    h("details", {class: "box"}, h("summary", {}, "Settings"), settings),
    h("details", {class: "box"}, h("summary", {}, "Document"), docForm),
    h("section", {class: "box danger-zone", "aria-labelledby": "h-rm"}, h("h3", {id: "h-rm"}, "Remove"),
      h("p", {}, "The integration goes; the devices it created stay."),
      h("button", {type: "button", class: "danger", onclick: (ev) => busy(ev.currentTarget, async () => {
        if (!(await confirmDialog(`Remove the integration ${name}?`, "Remove"))) return;
        await api("DELETE", base);
        toast(`${name} removed`);
        location.hash = href(["c", ctx.cid, "integrations"]);
      })}, "Remove integration")));
  try {
    await refresh();
  } catch (e) {
    if (e.status !== 404) throw e;
    fill(ctx.panel, h("p", {}, `There is no integration ${name}. `, h("a", {href: href(["c", ctx.cid, "integrations"])}, "Back to the list")));
    return {};
  }
  return {refresh: () => refresh(false)};
}

export function mount(ctx) {
  return ctx.segs[3] ? detailView(ctx) : listView(ctx);
}
