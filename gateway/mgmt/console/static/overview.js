// The connectors overview (#/): one card per connector with live counters — devices,
// online, open connections, writes/s and refusals by reason — and small charts of the
// last minutes.  Counters refresh with auto-refresh.
import {sparkline} from "./chart.js";
import {api, fill, fmtNumber, h} from "./lib.js";
import {href} from "./nav.js";
import {onlineSeries, refusalPills, sample, writeRates} from "./stats.js";

function card(c, st) {
  const rates = writeRates(c.id);
  const rate = rates.length ? rates[rates.length - 1] : 0;
  const online = onlineSeries(c.id);
  const conns = Object.entries(st.connections).map(([p, n]) => `${p} ${n}`).join(" · ") || "none";
  const d = st.devices;
  return h("article", {class: "card", "aria-labelledby": `card-${c.id}`, dataset: {connector: c.id}},
    h("h2", {id: `card-${c.id}`}, h("a", {href: href(["c", c.id, "devices"])}, c.name), " ", h("span", {class: "cid"}, c.id)),
    h("dl", {class: "stat-grid"},
      h("div", {}, h("dt", {}, "Devices"), h("dd", {}, h("span", {class: "big", "data-counter": "total"}, fmtNumber(d.total)),
        h("small", {class: "muted"}, `${fmtNumber(d.provisioned)} provisioned · ${fmtNumber(d.whitelisted)} whitelisted`))),
      h("div", {}, h("dt", {}, "Online"), h("dd", {}, h("span", {class: "big", "data-counter": "online"}, fmtNumber(d.online)),
        sparkline(online.slice(-60), {label: `devices online, last ${online.length} samples`}))),
      h("div", {}, h("dt", {}, "Writes/s"), h("dd", {}, h("span", {class: "big", "data-counter": "writes"}, rate.toFixed(1)),
        sparkline(rates.slice(-60), {label: `writes per second, last ${rates.length} samples`}))),
      h("div", {}, h("dt", {}, "Connections"), h("dd", {}, h("span", {class: "big", "data-counter": "connections"}, conns),
        h("small", {class: "muted"}, `${fmtNumber(st.writes)} values written since start`)))),
    h("div", {class: "refusals"}, h("h3", {}, "Refusals by reason"), refusalPills(st, c.id)));
}

export async function mount(ctx) {
  const grid = h("div", {class: "cards", id: "overview-cards"});
  fill(ctx.panel,
    h("h1", {}, "Connectors"),
    h("p", {class: "muted"}, "Live counters since the gateway started; charts cover the last minutes this page has been open."),
    grid);
  async function refresh() {
    const list = (await api("GET", "/connectors", undefined, {signal: ctx.signal})).items;
    const stats = await Promise.all(list.map((c) => sample(c.id)));
    fill(grid, list.length ? list.map((c, i) => card(c, stats[i])) : h("p", {}, "No connectors yet: create one with the form in the sidebar."));
  }
  await refresh();
  return {refresh};
}
