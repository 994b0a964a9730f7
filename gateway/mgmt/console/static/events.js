// The Events tab: the durable event log newest first, filtered by identity, type, IP and
// time, paged backwards with the API's `before` cursor (docs/protocol.md §6.6).  The first
// page follows new events while auto-refresh is on.
import {api, field, fill, h, localToUs, table, timeEl, usToLocal} from "./lib.js";
import {href, place} from "./nav.js";

export const EVENT_TYPES = [
  "provisioned", "connect", "disconnect", "data_in", "data_out", "publish", "content_in", "deleted",
  "integration_health", "connection_refused", "activation_refused", "write_refused", "request_refused",
];
const LIMITS = ["25", "50", "100", "200"];

/** The events route with query parameters (empty ones left out; `type` may hold several,
 * comma-separated). */
export function eventsPath(cid, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === "" || v == null) continue;
    if (k === "type") for (const t of String(v).split(",").map((x) => x.trim()).filter(Boolean)) q.append("type", t);
    else q.set(k, v);
  }
  return `/connectors/${encodeURIComponent(cid)}/events?${q}`;
}

/** A short reading of an event's payload: alias=value for writes and sets, topic=payload
 * for publishes, JSON otherwise. */
export function payloadText(ev) {
  const p = ev.payload;
  if (p == null) return "";
  let text;
  if (Array.isArray(p) && p.every((x) => x && typeof x.values === "object")) {
    text = p.map((x) => Object.entries(x.values).map(([a, v]) => `${a}=${v}`).join(" ")).join("; ");
  } else if (Array.isArray(p) && p.every((x) => x && "topic" in x)) {
    text = p.map((x) => `${x.topic}=${typeof x.payload === "string" ? x.payload : JSON.stringify(x.payload)}`).join("; ");
  } else text = JSON.stringify(p);
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

/** A table of events (newest first as given). */
export function eventsTable(items, {identity = true} = {}) {
  const {segs} = place();
  const cid = segs[1];
  return table([
    ["Seq", (e) => String(e.seq), "num"],
    ["Time", (e) => timeEl(e.timestamp)],
    ["Type", (e) => [h("span", {class: `etype ${e.type}`}, e.type), e.reason ? [" ", h("span", {class: "pill warn"}, e.reason)] : null]],
    identity ? ["Identity", (e) => (e.identity ? h("a", {href: href(["c", cid, "devices", e.identity])}, e.identity) : h("span", {class: "muted"}, "—"))] : null,
    ["IP", (e) => e.ip || h("span", {class: "muted"}, "—"), "narrow-hide nowrap"],
    ["Protocol", (e) => e.protocol || "", "narrow-hide"],
    ["Payload", (e) => h("code", {class: "value"}, payloadText(e))],
  ].filter(Boolean), items, {empty: "no events", rowAttrs: (e) => ({dataset: {seq: e.seq, type: e.type}})});
}

export async function mount(ctx) {
  const {cid} = ctx;
  let params = ctx.params;
  const form = h("form", {class: "filters", id: "ev-filter", role: "search"});
  const results = h("div", {id: "ev-table"});
  const pager = h("div", {class: "toolbar pager"});
  const note = h("p", {class: "muted", id: "ev-note", "aria-live": "polite"});

  function drawForm() {
    fill(form,
      field("Identity", h("input", {name: "identity", value: params.get("identity") || "", autocomplete: "off"})),
      field("Type", h("input", {name: "type", value: params.get("type") || "", list: "event-types", autocomplete: "off", placeholder: "any"}),
        "several: comma-separated"),
      h("datalist", {id: "event-types"}, EVENT_TYPES.map((t) => h("option", {value: t}))),
      field("IP address", h("input", {name: "ip", value: params.get("ip") || "", autocomplete: "off"})),
      field("From", h("input", {type: "datetime-local", name: "since", value: usToLocal(Number(params.get("since")) || 0)})),
      field("Until", h("input", {type: "datetime-local", name: "until", value: usToLocal(Number(params.get("until")) || 0)})),
      field("Per page", h("select", {name: "limit", value: params.get("limit") || "50"}, LIMITS.map((l) => h("option", {value: l}, l)))),
      h("div", {class: "field actions"}, h("button", {type: "submit"}, "Apply"),
        h("a", {class: "button secondary", href: href(["c", cid, "events"])}, "Clear")));
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = form.elements;
    ctx.go({
      identity: f.identity.value.trim(), type: f.type.value.replace(/\s+/g, ""), ip: f.ip.value.trim(),
      since: localToUs(f.since.value) || "", until: localToUs(f.until.value) || "",
      limit: f.limit.value === "50" ? "" : f.limit.value,
    });
  });

  async function refresh() {
    const query = {
      identity: params.get("identity"), type: params.get("type"), ip: params.get("ip"),
      since: params.get("since"), until: params.get("until"),
      before: params.get("before") || "-1", limit: params.get("limit") || "50",
    };
    const page = await api("GET", eventsPath(cid, query), undefined, {signal: ctx.signal});
    fill(results, eventsTable(page.items));
    const before = params.get("before");
    note.textContent = before ? `events before #${before}, newest first` : "newest first; new events appear while auto-refresh is on";
    fill(pager,
      h("button", {type: "button", class: "secondary", disabled: !before, onclick: () => { const p = new URLSearchParams(params); p.delete("before"); ctx.go(p); }}, "Newest"),
      h("button", {type: "button", class: "secondary", id: "ev-older", disabled: !page.next, onclick: () => { const p = new URLSearchParams(params); p.set("before", String(page.next)); ctx.go(p); }}, "Older"));
  }

  drawForm();
  fill(ctx.panel, h("h2", {class: "visually-hidden"}, "Events"), form, note, results, pager);
  await refresh();
  return {
    refresh: () => (params.get("before") ? undefined : refresh()),
    update: async (p) => { params = p; drawForm(); await refresh(); },
  };
}
