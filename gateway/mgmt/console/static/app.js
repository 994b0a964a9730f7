// Gateway web console: the shell (sign-in, connector list, tabs, router, auto-refresh).
// A dependency-free single-page client of the management REST API (v1); it holds no state
// of its own beyond the admin token (sessionStorage) and the auto-refresh choice
// (localStorage), so anything it shows is also reachable with the CLI and by scripts.
//
// Every place has a URL (#/c/<cid>/<tab>[/<item>]?<filters>), so a refresh, the back button
// and a shared link land where the operator was.  Views are modules exporting
// mount(ctx) -> {refresh?, unmount?}; the shell calls refresh() every few seconds while
// auto-refresh is on and the page is visible, and unmount() when the place changes.
import {$, $$, api, busy, fill, h, session, toast} from "./lib.js";
import {go, href, onNavigate, place} from "./nav.js";
import {connectorCounters, forgetStats} from "./stats.js";
import * as overview from "./overview.js";
import * as devices from "./devices.js";
import * as device from "./device.js";
import * as resources from "./resources.js";
import * as settings from "./settings.js";
import * as content from "./content.js";
import * as logs from "./logs.js";
import * as events from "./events.js";
import * as integrations from "./integrations.js";

const REFRESH_MS = 3000;
const TABS = [
  ["devices", "Devices", devices],
  ["resources", "Resources", resources],
  ["settings", "Settings", settings],
  ["content", "Content", content],
  ["logs", "Logs", logs],
  ["events", "Events", events],
  ["integrations", "Integrations", integrations],
];

const state = {
  connectors: [],
  view: null, // {refresh, unmount} of the mounted view
  key: "", // the mounted place (path without the query)
  abort: null, // AbortController of the mounted view
  refreshing: false,
  auto: localStorage.getItem("gwAuto") !== "off",
};

// -- sign-in -----------------------------------------------------------------------------

function signOut() {
  sessionStorage.removeItem("gwToken");
  session.token = "";
  unmountView();
  state.key = "";
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#refresh-control").hidden = true;
  $("#login").hidden = false;
  $("#token").focus();
}
session.onUnauthorized = signOut;

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const candidate = $("#token").value.trim();
  const prev = session.token;
  session.token = candidate;
  try {
    await api("GET", "/connectors");
  } catch (_) {
    session.token = prev;
    $("#login-error").textContent = "That token was not accepted.";
    return;
  }
  sessionStorage.setItem("gwToken", candidate);
  $("#login-error").textContent = "";
  $("#token").value = "";
  await start().catch((e) => toast(e.message, true));
});
$("#logout").addEventListener("click", signOut);

// -- the shell ---------------------------------------------------------------------------

async function health() {
  try {
    const hl = await (await fetch("/api/v1/health")).json();
    $("#health").textContent = `v${hl.version} · ${hl.compiled ? "compiled" : "pure Python"} hot path`;
  } catch (_) {
    $("#health").textContent = "gateway unreachable";
  }
}

async function loadConnectors() {
  state.connectors = (await api("GET", "/connectors")).items;
  renderSidebar();
}

function renderSidebar() {
  const {segs} = place();
  const current = segs[0] === "c" ? segs[1] : null;
  fill($("#connectors"), state.connectors.map((c) =>
    h("li", {}, h("a", {href: href(["c", c.id, "devices"]), "aria-current": c.id === current ? "page" : null},
      h("span", {class: "name"}, c.name), " ", h("span", {class: "cid"}, c.id)))));
  $("#nav-overview").setAttribute("aria-current", segs.length === 0 ? "page" : "false");
}

$("#new-connector").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = ev.target;
  busy(form.querySelector("button"), async () => {
    const body = {name: form.elements.name.value.trim()};
    if (form.elements.cid.value.trim()) body.id = form.elements.cid.value.trim();
    const c = await api("POST", "/connectors", body);
    form.reset();
    form.closest("details").open = false;
    await loadConnectors();
    toast(`connector ${c.id} created`);
    go(["c", c.id, "devices"]);
  });
});

$("#auto-refresh").checked = state.auto;
$("#auto-refresh").addEventListener("change", (ev) => {
  state.auto = ev.target.checked;
  localStorage.setItem("gwAuto", state.auto ? "on" : "off");
  if (state.auto) tick();
});

function unmountView() {
  state.abort?.abort();
  try { state.view?.unmount?.(); } catch (e) { console.warn(e); }
  state.view = null;
  state.abort = null;
}

function connectorHead(c) {
  const counters = h("div", {class: "counters", id: "head-counters", "aria-live": "off"});
  return [
    h("div", {class: "head-row"},
      h("h1", {}, c.name),
      h("span", {class: "cid"}, c.id)),
    h("p", {class: "muted head-meta"}, "Device host ", h("code", {}, c.fqdn),
      c.settings.protocol.devmode ? [" · dev mode ", h("code", {}, c.devmode_fqdn)] : null,
      c.description ? ` · ${c.description}` : null),
    counters,
  ];
}

function tabs(cid, active) {
  return h("nav", {class: "tabs", "aria-label": "Connector sections"},
    h("ul", {}, TABS.map(([key, label]) =>
      h("li", {}, h("a", {href: href(["c", cid, key]), "aria-current": key === active ? "page" : null, dataset: {tab: key}}, label)))));
}

/** Draw the place in the hash: the connector head and tabs, then the view in #panel. */
async function render() {
  if (!session.token) return;
  const {segs, params} = place();
  renderSidebar();
  let mod, key, ctx;
  const main = $("#main");
  if (segs[0] === "c" && segs[1]) {
    const cid = segs[1];
    let c = state.connectors.find((x) => x.id === cid);
    if (!c) {
      await loadConnectors();
      c = state.connectors.find((x) => x.id === cid);
    }
    if (!c) {
      unmountView();
      state.key = "";
      fill(main, h("h1", {}, "Not found"), h("p", {}, `There is no connector ${cid}. `, h("a", {href: "#/"}, "Back to the overview")));
      return;
    }
    const tab = TABS.some(([k]) => k === segs[2]) ? segs[2] : "devices";
    if (segs[2] !== tab) { go(["c", cid, tab], null, {replace: true}); return; }
    if (tab === "devices" && segs[3] !== undefined) mod = device;
    else mod = TABS.find(([k]) => k === tab)[2];
    key = segs.slice(0, 4).join("/");
    if (state.key === key && state.view?.update) { // same view, new query: let it update in place
      try { await state.view.update(params); } catch (e) { if (e.name !== "AbortError") toast(e.message, true); }
      return;
    }
    unmountView();
    const panel = h("div", {id: "panel", class: "panel"});
    fill(main, h("header", {class: "connector-head"}, connectorHead(c)), tabs(cid, tab), panel);
    document.title = `${c.name} · ${TABS.find(([k]) => k === tab)[1]} · Gateway console`;
    ctx = {cid, connector: c, segs, params, panel, reloadConnector: async () => { await loadConnectors(); return state.connectors.find((x) => x.id === cid); }};
  } else {
    key = "overview";
    if (state.key === key) return;
    unmountView();
    mod = overview;
    const panel = h("div", {id: "panel", class: "panel"});
    fill(main, panel);
    document.title = "Overview · Gateway console";
    ctx = {segs, params, panel, connectors: state.connectors};
  }
  state.key = key;
  const abort = new AbortController();
  state.abort = abort;
  ctx.signal = abort.signal;
  ctx.go = (p, opts) => go(segs, p, opts);
  let view = {};
  try {
    view = (await mod.mount(ctx)) || {};
  } catch (e) {
    if (e.name !== "AbortError") toast(e.message, true);
  }
  if (state.abort !== abort) { // another place was drawn meanwhile: this view is gone
    try { view.unmount?.(); } catch (_) { /* already torn down */ }
    return;
  }
  state.view = view;
  if (ctx.cid) refreshCounters(ctx.cid);
}

async function refreshCounters(cid) {
  const el = $("#head-counters");
  if (!el) return;
  try { fill(el, await connectorCounters(cid)); } catch (_) { /* the next tick tries again */ }
}

/** One auto-refresh round: the mounted view and the connector counters. */
async function tick() {
  if (!state.auto || document.hidden || state.refreshing || !session.token || !state.view) return;
  state.refreshing = true;
  try {
    await state.view.refresh?.();
    const {segs} = place();
    if (segs[0] === "c" && segs[1]) await refreshCounters(segs[1]);
    $("#conn-state").textContent = "";
  } catch (e) {
    if (e.name !== "AbortError") $("#conn-state").textContent = `refresh failed: ${e.message}`;
  } finally {
    state.refreshing = false;
  }
}

async function start() {
  await health();
  if (!session.token) { signOut(); return; }
  try {
    await loadConnectors();
  } catch (_) {
    return; // a 401 signed us out
  }
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  $("#refresh-control").hidden = false;
  forgetStats();
  state.key = "";
  await render();
}

onNavigate(() => { render().catch((e) => toast(e.message, true)); });
window.addEventListener("hashchange", () => { render().catch((e) => toast(e.message, true)); });
setInterval(tick, REFRESH_MS);
document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
// The tab list is also a row of arrow-key buttons (left/right move between sections).
document.addEventListener("keydown", (ev) => {
  const a = ev.target.closest?.(".tabs a");
  if (!a || (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft")) return;
  const links = $$(".tabs a");
  const i = links.indexOf(a) + (ev.key === "ArrowRight" ? 1 : -1);
  links[(i + links.length) % links.length].focus();
  ev.preventDefault();
});
start().catch((e) => toast(e.message, true));
