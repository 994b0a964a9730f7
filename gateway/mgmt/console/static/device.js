// The device page (#/c/<cid>/devices/<identity>): status, last IP and seen, lock/unlock,
// credentials reset, delete; every resource with its reported and set values, pending flag
// and times; setting a value (settable aliases only, a JSON editor for JSON values such as
// config_io); tags; a chart of each numeric or JSON-channel value over time from the event
// log; the device's recent events and its live log.
import {lineChart, seriesFromEvents} from "./chart.js";
import {api, busy, confirmDialog, field, fill, h, select, statusLine, timeEl, toast} from "./lib.js";
import {devPath, onlineBadge, statusPills} from "./devices.js";
import {eventsTable, eventsPath} from "./events.js";
import {LogView} from "./logs.js";
import {href} from "./nav.js";

const CHART_EVENTS = 1000; // newest data_in events charted

const looksJson = (text) => typeof text === "string" && /^\s*[[{]/.test(text);

function valueCell(v) {
  if (v == null) return h("span", {class: "muted"}, "—");
  return h("code", {class: "value", title: v.length > 60 ? v : null}, v.length > 240 ? `${v.slice(0, 239)}…` : v);
}

function setForm(ctx, identity, resources, stateRef, after) {
  const settable = resources.filter((r) => r.settable);
  if (!settable.length) return h("p", {class: "muted"}, "No settable resources: define one on the Resources tab.");
  const alias = select("alias", settable.map((r) => [r.alias, `${r.alias} (${r.format}${r.sync ? ", sync" : ""})`]), settable[0].alias);
  const plain = h("input", {name: "value", autocomplete: "off", spellcheck: false});
  const json = h("textarea", {name: "json", rows: 6, spellcheck: false, class: "code"});
  const jsonCheck = h("small", {class: "hint", id: "json-check", "aria-live": "polite"});
  json.setAttribute("aria-describedby", "json-check");
  const useJson = h("input", {type: "checkbox", id: "use-json", name: "use_json"});
  const status = statusLine();
  const plainField = field("Value", plain);
  const jsonField = h("div", {class: "field"}, h("label", {for: "set-json"}, "JSON value"), Object.assign(json, {id: "set-json"}), jsonCheck,
    h("div", {class: "toolbar"}, h("button", {type: "button", class: "secondary small", onclick: () => {
      try { json.value = JSON.stringify(JSON.parse(json.value), null, 2); check(); } catch (_) { check(); }
    }}, "Format JSON")));
  function check() {
    if (!useJson.checked) return true;
    try { JSON.parse(json.value); jsonCheck.textContent = "valid JSON"; jsonCheck.className = "hint ok"; json.setCustomValidity(""); return true; }
    catch (e) { jsonCheck.textContent = `not JSON: ${e.message}`; jsonCheck.className = "hint error"; json.setCustomValidity("not JSON"); return false; }
  }
  json.addEventListener("input", check);
  function choose() {
    const current = stateRef.state[alias.value];
    const text = current ? (current.set ?? current.reported ?? "") : "";
    useJson.checked = alias.value === "config_io" || looksJson(text);
    plainField.hidden = useJson.checked;
    jsonField.hidden = !useJson.checked;
    if (useJson.checked) {
      try { json.value = text ? JSON.stringify(JSON.parse(text), null, 2) : "{}"; } catch (_) { json.value = text; }
      check();
    } else plain.value = "";
  }
  alias.addEventListener("change", choose);
  useJson.addEventListener("change", () => { plainField.hidden = useJson.checked; jsonField.hidden = !useJson.checked; check(); });
  const form = h("form", {class: "stack", id: "setv"},
    field("Settable resource", alias),
    h("div", {class: "field check"}, useJson, h("label", {for: "use-json"}, "Edit as JSON")),
    plainField, jsonField,
    h("div", {class: "toolbar"}, h("button", {type: "submit"}, "Set value")),
    status);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!check()) { status.set("fix the JSON first", true); return; }
    const value = useJson.checked ? JSON.stringify(JSON.parse(json.value)) : plain.value;
    busy(form.querySelector("button[type=submit]"), async () => {
      try {
        await api("PATCH", devPath(ctx.cid, `/${encodeURIComponent(identity)}/state`), {[alias.value]: value});
      } catch (e) { status.set(e.message, true); return; }
      status.set(`${alias.value} set; pending until the device acknowledges it`);
      toast(`${alias.value} set`);
      await after();
    });
  });
  choose();
  return form;
}

export async function mount(ctx) {
  const {cid} = ctx;
  const identity = ctx.segs[3];
  const id = encodeURIComponent(identity);
  const head = h("div", {class: "device-head"});
  const facts = h("dl", {class: "facts", id: "dev-facts"});
  const actions = h("div", {class: "toolbar", id: "dev-actions"});
  const stateBox = h("div", {id: "dev-state"});
  const setBox = h("div", {id: "dev-set"});
  const tagsBox = h("div", {id: "dev-tags"});
  const charts = h("div", {class: "charts", id: "dev-charts", "aria-live": "off"});
  const eventsBox = h("div", {id: "dev-events"});
  const stateRef = {state: {}};
  let resources = [];
  let device = null;

  const log = new LogView(cid, {identity, compact: true, signal: ctx.signal});

  async function act(what) {
    if (what === "delete") {
      if (!(await confirmDialog(`Delete device ${identity}? Its state goes too; its events stay in the log.`, "Delete"))) return;
      await api("DELETE", devPath(cid, `/${id}`));
      toast(`${identity} deleted`);
      location.hash = href(["c", cid, "devices"]);
      return;
    }
    if (what === "reset" && !(await confirmDialog(`Reset the credentials of ${identity}? It must activate again to get new ones.`, "Reset credentials"))) return;
    const body = what === "reset" ? {reprovision: true} : {locked: what === "lock"};
    await api("PATCH", devPath(cid, `/${id}`), body);
    toast({lock: `${identity} locked`, unlock: `${identity} unlocked`, reset: `credentials of ${identity} reset`}[what]);
    await refresh();
  }

  function drawTags(d) {
    const name = h("input", {name: "name", required: true, autocomplete: "off"});
    const value = h("input", {name: "value", autocomplete: "off"});
    const form = h("form", {class: "inline-form", id: "addtag"},
      field("Tag name", name), field("Value", value), h("div", {class: "field actions"}, h("button", {type: "submit", class: "secondary"}, "Add tag")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy(form.querySelector("button"), async () => {
        await api("PATCH", devPath(cid, `/${id}`), {tags: {add: [{name: name.value.trim(), value: value.value.trim()}]}});
        toast("tag added");
        await refresh();
      });
    });
    fill(tagsBox,
      d.tags.length
        ? h("ul", {class: "pills"}, d.tags.map((t) => h("li", {class: "pill tag"}, `${t.name}=${t.value} `,
          h("button", {type: "button", class: "pill-x", "aria-label": `Remove tag ${t.name}=${t.value}`, onclick: (ev) => busy(ev.currentTarget, async () => {
            await api("PATCH", devPath(cid, `/${id}`), {tags: {remove: [{name: t.name, value: t.value}]}});
            toast("tag removed");
            await refresh();
          })}, "×"))))
        : h("p", {class: "muted"}, "No tags."),
      form);
  }

  function drawState() {
    const aliases = [...new Set([...resources.map((r) => r.alias), ...Object.keys(stateRef.state)])].sort();
    const res = new Map(resources.map((r) => [r.alias, r]));
    fill(stateBox, h("div", {class: "table-wrap"}, h("table", {},
      h("thead", {}, h("tr", {}, ["Resource", "Reported", "Reported at", "Set", "Set at", "Pending"].map((t) => h("th", {scope: "col"}, t)))),
      h("tbody", {}, aliases.map((a) => {
        const v = stateRef.state[a] || {};
        const r = res.get(a);
        return h("tr", {dataset: {alias: a}},
          h("th", {scope: "row"}, a, r ? h("small", {class: "muted"}, ` ${r.format}${r.settable ? ", settable" : ""}`) : h("small", {class: "muted"}, " undefined")),
          h("td", {}, valueCell(v.reported)), h("td", {}, timeEl(v.reported_timestamp)),
          h("td", {}, valueCell(v.set)), h("td", {}, timeEl(v.set_timestamp)),
          h("td", {}, v.pending ? h("span", {class: "pill warn"}, "pending") : h("span", {class: "muted"}, "no")));
      })))));
  }

  async function drawCharts() {
    const page = await api("GET", eventsPath(cid, {identity, type: "data_in", before: "-1", limit: String(CHART_EVENTS)}), undefined, {signal: ctx.signal});
    const series = seriesFromEvents(page.items);
    if (!series.size) { fill(charts, h("p", {class: "muted"}, "No numeric values written yet: charts appear after the device writes numbers or JSON channels.")); return; }
    const units = new Map(resources.map((r) => [r.alias, r.unit ? ` ${r.unit}` : ""]));
    fill(charts, [...series.keys()].sort().map((name) => lineChart(name, series.get(name), {unit: units.get(name) || ""})));
  }

  async function drawEvents() {
    const page = await api("GET", eventsPath(cid, {identity, before: "-1", limit: "20"}), undefined, {signal: ctx.signal});
    fill(eventsBox, eventsTable(page.items, {identity: false}),
      h("p", {}, h("a", {href: href(["c", cid, "events"], {identity})}, "All events of this device →")));
  }

  async function refresh() {
    let d, st;
    try {
      [d, st, resources] = await Promise.all([
        api("GET", devPath(cid, `/${id}`), undefined, {signal: ctx.signal}),
        api("GET", devPath(cid, `/${id}/state`), undefined, {signal: ctx.signal}),
        api("GET", `/connectors/${encodeURIComponent(cid)}/resources`, undefined, {signal: ctx.signal}).then((r) => r.items),
      ]);
    } catch (e) {
      if (e.status === 404) {
        fill(ctx.panel, h("h2", {}, identity), h("p", {}, "This device does not exist (any more). ", h("a", {href: href(["c", cid, "devices"])}, "Back to the devices")));
        return;
      }
      throw e;
    }
    const first = device === null;
    device = d;
    stateRef.state = st;
    fill(head,
      h("a", {href: href(["c", cid, "devices"]), class: "back"}, "← Devices"),
      h("h2", {id: "dev-title"}, identity), statusPills(d), onlineBadge(d));
    fill(facts,
      h("div", {}, h("dt", {}, "Last IP"), h("dd", {id: "dev-lastip"}, d.lastip || "—")),
      h("div", {}, h("dt", {}, "Last seen"), h("dd", {}, timeEl(d.lastseen, true))),
      h("div", {}, h("dt", {}, "Created"), h("dd", {}, timeEl(d.created))),
      h("div", {}, h("dt", {}, "Credentials"), h("dd", {}, d.auth.type || "none yet")));
    fill(actions,
      h("button", {type: "button", class: "secondary", id: "lock", onclick: (ev) => busy(ev.currentTarget, () => act(d.locked ? "unlock" : "lock"))}, d.locked ? "Unlock" : "Lock"),
      h("button", {type: "button", class: "secondary", id: "reset", onclick: (ev) => busy(ev.currentTarget, () => act("reset"))}, "Reset credentials"),
      h("button", {type: "button", class: "danger", id: "del", onclick: (ev) => busy(ev.currentTarget, () => act("delete"))}, "Delete"));
    drawState();
    if (first) fill(setBox, setForm(ctx, identity, resources, stateRef, refresh));
    drawTags(d);
    await Promise.all([drawCharts(), drawEvents()]);
  }

  fill(ctx.panel,
    head, facts, actions,
    h("section", {"aria-labelledby": "h-res"}, h("h3", {id: "h-res"}, "Resources"), stateBox),
    h("section", {"aria-labelledby": "h-charts"}, h("h3", {id: "h-charts"}, "Values over time"), charts),
    h("div", {class: "two-col"},
      h("section", {"aria-labelledby": "h-set", class: "box"}, h("h3", {id: "h-set"}, "Set a value"), setBox),
      h("section", {"aria-labelledby": "h-tags", class: "box"}, h("h3", {id: "h-tags"}, "Tags"), tagsBox)),
    h("section", {"aria-labelledby": "h-ev"}, h("h3", {id: "h-ev"}, "Recent events"), eventsBox),
    h("section", {"aria-labelledby": "h-log"}, h("h3", {id: "h-log"}, "Live log"), log.element));
  await refresh();
  log.start();
  return {refresh, unmount: () => log.stop()};
}
