// Gateway web console: a small single-page client of the management REST API (v1).
// It uses exactly the routes of docs/architecture.md, with the admin bearer token kept in
// sessionStorage; live logs read the SSE stream with fetch() so the token travels in the
// Authorization header (EventSource cannot send headers).
"use strict";

const API = "/api/v1";
const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmtTime = (us) => us ? new Date(us / 1000).toISOString().replace("T", " ").slice(0, 19) : "";
let state = {token: sessionStorage.getItem("gwToken") || "", connector: null, tab: "devices", cursorStack: [], logAbort: null};

function toast(msg, bad = false) {
  const t = $("#toast");
  t.textContent = msg; t.className = bad ? "bad" : ""; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

async function api(method, path, body, {raw = false, headers = {}} = {}) {
  const init = {method, headers: {Authorization: `Bearer ${state.token}`, ...headers}};
  if (body !== undefined) {
    if (body instanceof Blob || typeof body === "string") { init.body = body; }
    else { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  }
  const res = await fetch(API + path, init);
  if (res.status === 401) { signOut(); throw new Error("unauthorized"); }
  if (!res.ok) {
    let msg = `${res.status}`;
    try { const e = await res.json(); msg = `${e.error}: ${e.message}`; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

function signOut() {
  sessionStorage.removeItem("gwToken"); state.token = "";
  if (state.logAbort) state.logAbort.abort();
  $("#app").hidden = true; $("#login").hidden = false; $("#logout").hidden = true;
}

async function start() {
  try {
    const h = await (await fetch(API + "/health")).json();
    $("#health").textContent = `v${h.version} · ${h.compiled ? "compiled" : "pure Python"} hot path`;
  } catch (_) { $("#health").textContent = "unreachable"; }
  if (!state.token) { signOut(); return; }
  $("#login").hidden = true; $("#app").hidden = false; $("#logout").hidden = false;
  await loadConnectors();
}

async function loadConnectors(select) {
  const list = await api("GET", "/connectors");
  const ul = $("#connectors");
  ul.innerHTML = list.items.map((c) => `<li><a href="#" data-id="${esc(c.id)}">${esc(c.name)} <span class="muted">${esc(c.id)}</span></a></li>`).join("");
  ul.querySelectorAll("a").forEach((a) => a.onclick = (ev) => { ev.preventDefault(); openConnector(a.dataset.id); });
  const want = select || state.connector || (list.items[0] && list.items[0].id);
  if (want) openConnector(want);
}

async function openConnector(id) {
  state.connector = id; state.cursorStack = [];
  document.querySelectorAll("#connectors a").forEach((a) => a.classList.toggle("active", a.dataset.id === id));
  const c = await api("GET", `/connectors/${encodeURIComponent(id)}`);
  $("#connector-head").innerHTML = `<h2>${esc(c.name)}</h2><div class="muted">id <code>${esc(c.id)}</code> · device FQDN <code>${esc(c.fqdn)}</code></div>`;
  $("#tabs").hidden = false;
  showTab(state.tab);
}

function showTab(tab) {
  if (state.logAbort && tab !== "logs") { state.logAbort.abort(); state.logAbort = null; }
  state.tab = tab;
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  ({devices: showDevices, resources: showResources, settings: showSettings, content: showContent, events: showEvents, logs: showLogs})[tab]().catch((e) => toast(e.message, true));
}

const cpath = (rest = "") => `/connectors/${encodeURIComponent(state.connector)}${rest}`;

async function showDevices(cursor) {
  const p = $("#panel");
  if (!$("#dev-filter", p)) {
    p.innerHTML = `<form id="dev-filter" class="toolbar">
        <input name="q" placeholder="identity prefix"><select name="status"><option value="">any status</option>
        <option>whitelisted</option><option>provisioned</option><option>locked</option><option>online</option></select>
        <input name="tag" placeholder="tag name:value"><button>Search</button></form>
      <form id="dev-add" class="toolbar"><input name="identity" placeholder="new identity" required><button class="secondary">Whitelist</button></form>
      <div id="dev-table"></div><div class="toolbar"><button id="dev-prev" class="secondary">Previous</button><button id="dev-next" class="secondary">Next</button></div>`;
    $("#dev-filter").onsubmit = (ev) => { ev.preventDefault(); state.cursorStack = []; showDevices(); };
    $("#dev-add").onsubmit = async (ev) => {
      ev.preventDefault();
      try { await api("POST", cpath("/devices"), {identity: ev.target.identity.value}); toast("whitelisted"); ev.target.reset(); showDevices(); }
      catch (e) { toast(e.message, true); }
    };
  }
  const f = $("#dev-filter");
  const params = new URLSearchParams({limit: "50"});
  if (f.q.value) params.set("q", f.q.value);
  if (f.status.value) params.set("status", f.status.value);
  if (f.tag.value) params.append("tag", f.tag.value);
  if (cursor) params.set("cursor", cursor);
  const page = await api("GET", cpath(`/devices?${params}`));
  $("#dev-table").innerHTML = `<table><thead><tr><th>Identity</th><th>Status</th><th>Online</th><th>Last IP</th><th>Last seen</th><th>Tags</th></tr></thead><tbody>${
    page.items.map((d) => `<tr><td><a href="#" data-id="${esc(d.identity)}">${esc(d.identity)}</a></td><td>${esc(d.status)}${d.locked ? ' <span class="pill error">locked</span>' : ""}</td>
      <td class="${d.online ? "on" : "off"}">${d.online ? "online" : "offline"}</td><td>${esc(d.lastip || "")}</td><td>${fmtTime(d.lastseen)}</td>
      <td>${(d.tags || []).map((t) => `<span class="pill">${esc(t.name)}=${esc(t.value)}</span>`).join("")}</td></tr>`).join("") || '<tr><td colspan="6" class="muted">no devices</td></tr>'}</tbody></table>`;
  $("#dev-table").querySelectorAll("a").forEach((a) => a.onclick = (ev) => { ev.preventDefault(); showDevice(a.dataset.id); });
  $("#dev-next").disabled = !page.next;
  $("#dev-next").onclick = () => { state.cursorStack.push(cursor || ""); showDevices(page.next); };
  $("#dev-prev").disabled = state.cursorStack.length === 0;
  $("#dev-prev").onclick = () => showDevices(state.cursorStack.pop() || undefined);
}

async function showDevice(identity) {
  const id = encodeURIComponent(identity);
  const [d, st] = await Promise.all([api("GET", cpath(`/devices/${id}`)), api("GET", cpath(`/devices/${id}/state`))]);
  const p = $("#panel");
  p.innerHTML = `<div class="toolbar"><button class="secondary" id="back">← Devices</button><h2 style="margin:0">${esc(d.identity)}</h2>
      <span class="pill">${esc(d.status)}</span>${d.locked ? '<span class="pill error">locked</span>' : ""}<span class="${d.online ? "on" : "off"}">${d.online ? "online" : "offline"}</span></div>
    <div class="toolbar"><button id="lock" class="secondary">${d.locked ? "Unlock" : "Lock"}</button><button id="reset" class="secondary">Reset credentials</button><button id="del" class="danger">Delete</button></div>
    <h2>State</h2><table><thead><tr><th>Alias</th><th>Reported</th><th>Set</th><th>Pending</th><th>Updated</th></tr></thead><tbody>${
      Object.entries(st).map(([a, v]) => `<tr><td>${esc(a)}</td><td><code>${esc(v.reported)}</code></td><td><code>${esc(v.set)}</code></td><td>${v.pending ? "yes" : ""}</td><td>${fmtTime(v.timestamp)}</td></tr>`).join("") || '<tr><td colspan="5" class="muted">no values yet</td></tr>'}</tbody></table>
    <form id="setv" class="toolbar"><input name="alias" placeholder="alias (settable)" required><input name="value" placeholder="value" size="40" required><button>Set value</button></form>
    <h2>Tags</h2><div>${(d.tags || []).map((t) => `<span class="pill">${esc(t.name)}=${esc(t.value)} <a href="#" data-n="${esc(t.name)}" data-v="${esc(t.value)}">×</a></span>`).join("") || '<span class="muted">none</span>'}</div>
    <form id="addtag" class="toolbar"><input name="name" placeholder="tag name" required><input name="value" placeholder="value" required><button class="secondary">Add tag</button></form>`;
  $("#back").onclick = () => { p.innerHTML = ""; showDevices(); };
  const act = async (fn, msg) => { try { await fn(); toast(msg); showDevice(identity); } catch (e) { toast(e.message, true); } };
  $("#lock").onclick = () => act(() => api("PATCH", cpath(`/devices/${id}`), {locked: !d.locked}), d.locked ? "unlocked" : "locked");
  $("#reset").onclick = () => act(() => api("PATCH", cpath(`/devices/${id}`), {reprovision: true}), "credentials reset");
  $("#del").onclick = async () => { if (confirm(`Delete ${identity}?`)) { try { await api("DELETE", cpath(`/devices/${id}`)); toast("deleted"); p.innerHTML = ""; showDevices(); } catch (e) { toast(e.message, true); } } };
  $("#setv").onsubmit = (ev) => { ev.preventDefault(); act(() => api("PATCH", cpath(`/devices/${id}/state`), {[ev.target.alias.value]: ev.target.value.value}), "value set"); };
  $("#addtag").onsubmit = (ev) => { ev.preventDefault(); act(() => api("PATCH", cpath(`/devices/${id}`), {tags: {add: [{name: ev.target.name.value, value: ev.target.value.value}]}}), "tag added"); };
  p.querySelectorAll("a[data-n]").forEach((a) => a.onclick = (ev) => { ev.preventDefault(); act(() => api("PATCH", cpath(`/devices/${id}`), {tags: {remove: [{name: a.dataset.n, value: a.dataset.v}]}}), "tag removed"); });
}

async function showResources() {
  const list = await api("GET", cpath("/resources"));
  const p = $("#panel");
  p.innerHTML = `<table><thead><tr><th>Alias</th><th>Format</th><th>Settable</th><th>Sync</th><th>Allowed</th><th></th></tr></thead><tbody>${
    list.items.map((r) => `<tr><td>${esc(r.alias)}</td><td>${esc(r.format)}</td><td>${r.settable ? "yes" : ""}</td><td>${r.settable && r.sync ? "yes" : ""}</td><td>${esc((r.allowed || []).join(", "))}</td><td><button class="danger" data-a="${esc(r.alias)}">Delete</button></td></tr>`).join("")}</tbody></table>
    <form id="addres" class="toolbar"><input name="alias" placeholder="alias" required><select name="format"><option>string</option><option>number</option><option>boolean</option></select>
    <label><input type="checkbox" name="settable"> settable</label><label><input type="checkbox" name="sync" checked> sync</label><button>Add resource</button></form>`;
  p.querySelectorAll("button[data-a]").forEach((b) => b.onclick = async () => { try { await api("DELETE", cpath(`/resources/${encodeURIComponent(b.dataset.a)}`)); showResources(); } catch (e) { toast(e.message, true); } });
  $("#addres").onsubmit = async (ev) => {
    ev.preventDefault(); const f = ev.target;
    try { await api("POST", cpath("/resources"), {alias: f.alias.value, format: f.format.value, settable: f.settable.checked, sync: f.sync.checked}); showResources(); }
    catch (e) { toast(e.message, true); }
  };
}

async function showSettings() {
  const s = await api("GET", cpath("/settings"));
  const p = $("#panel");
  p.innerHTML = `<p class="muted">Edit and save: the change is validated as a whole and applies to new connections.</p>
    <textarea id="settings-json" rows="24" style="width:100%;font-family:ui-monospace,monospace">${esc(JSON.stringify(s, null, 2))}</textarea>
    <div class="toolbar"><button id="save">Save settings</button></div>`;
  $("#save").onclick = async () => {
    let body; try { body = JSON.parse($("#settings-json").value); } catch (e) { toast(`invalid JSON: ${e.message}`, true); return; }
    try { await api("PATCH", cpath("/settings"), body); toast("settings saved"); } catch (e) { toast(e.message, true); }
  };
}

async function showContent() {
  const list = await api("GET", cpath("/content"));
  const p = $("#panel");
  p.innerHTML = `<table><thead><tr><th>Id</th><th>Type</th><th>Size</th><th>Updated</th><th></th></tr></thead><tbody>${
    list.items.map((c) => `<tr><td>${esc(c.id)}</td><td>${esc(c.type)}</td><td>${c.length}</td><td>${fmtTime(c.updated)}</td><td><button class="danger" data-id="${esc(c.id)}">Delete</button></td></tr>`).join("") || '<tr><td colspan="5" class="muted">no content</td></tr>'}</tbody></table>
    <form id="upload" class="toolbar"><input name="id" placeholder="content id" required><input type="file" name="file" required><button>Upload</button></form>`;
  p.querySelectorAll("button[data-id]").forEach((b) => b.onclick = async () => { try { await api("DELETE", cpath(`/content/${encodeURIComponent(b.dataset.id)}`)); showContent(); } catch (e) { toast(e.message, true); } });
  $("#upload").onsubmit = async (ev) => {
    ev.preventDefault(); const f = ev.target; const file = f.file.files[0];
    try { await api("PUT", cpath(`/content/${encodeURIComponent(f.id.value)}`), file, {headers: {"Content-Type": file.type || "application/octet-stream"}}); toast("uploaded"); showContent(); }
    catch (e) { toast(e.message, true); }
  };
}

async function showEvents() {
  const list = await api("GET", cpath("/events?after=0&limit=200"));
  const items = (list.items || list).slice().reverse();
  $("#panel").innerHTML = `<table><thead><tr><th>Seq</th><th>Time</th><th>Type</th><th>Identity</th><th>IP</th><th>Payload</th></tr></thead><tbody>${
    items.map((e) => `<tr><td>${e.seq}</td><td>${fmtTime(e.timestamp)}</td><td>${esc(e.type)}${e.reason ? ` <span class="muted">${esc(e.reason)}</span>` : ""}</td><td>${esc(e.identity || "")}</td><td>${esc(e.ip || "")}</td><td><code>${esc(e.payload == null ? "" : JSON.stringify(e.payload)).slice(0, 300)}</code></td></tr>`).join("") || '<tr><td colspan="6" class="muted">no events</td></tr>'}</tbody></table>`;
}

async function showLogs() {
  const p = $("#panel");
  p.innerHTML = `<form id="logf" class="toolbar"><select name="kind"><option value="">events + debug</option><option>events</option><option>debug</option></select>
    <input name="identity" placeholder="identity"><input name="ip" placeholder="IP address"><button>Follow</button></form><div class="log" id="log"></div>`;
  const follow = async () => {
    if (state.logAbort) state.logAbort.abort();
    const ctl = new AbortController(); state.logAbort = ctl;
    const f = $("#logf"); const params = new URLSearchParams();
    for (const k of ["kind", "identity", "ip"]) if (f[k].value) params.set(k, f[k].value);
    const out = $("#log"); out.innerHTML = "";
    try {
      const res = await fetch(`${API}${cpath(`/logs?${params}`)}`, {headers: {Authorization: `Bearer ${state.token}`, Accept: "text/event-stream"}, signal: ctl.signal});
      if (!res.ok) throw new Error(`logs: ${res.status}`);
      const reader = res.body.getReader(); const dec = new TextDecoder(); let buf = "";
      for (;;) {
        const {value, done} = await reader.read(); if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data) continue;
          let rec; try { rec = JSON.parse(data); } catch (_) { continue; }
          const line = document.createElement("div"); line.className = rec.kind || "";
          line.textContent = `${fmtTime(rec.timestamp)} ${rec.kind || ""} ${rec.event || ""} ${rec.identity || "-"} ${rec.ip || ""} ${rec.reason || ""} ${rec.detail || ""}`;
          out.appendChild(line); out.scrollTop = out.scrollHeight;
        }
      }
    } catch (e) { if (e.name !== "AbortError") toast(e.message, true); }
  };
  $("#logf").onsubmit = (ev) => { ev.preventDefault(); follow(); };
  follow();
}

$("#login-form").onsubmit = async (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  try { await api("GET", "/connectors"); sessionStorage.setItem("gwToken", state.token); $("#login-error").textContent = ""; start(); }
  catch (e) { $("#login-error").textContent = "That token was not accepted."; }
};
$("#logout").onclick = signOut;
$("#new-connector").onsubmit = async (ev) => {
  ev.preventDefault();
  try { const c = await api("POST", "/connectors", {name: ev.target.name.value}); ev.target.reset(); await loadConnectors(c.id); }
  catch (e) { toast(e.message, true); }
};
document.querySelectorAll("#tabs button").forEach((b) => b.onclick = () => showTab(b.dataset.tab));
start();
