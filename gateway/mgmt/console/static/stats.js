// Live counters of a connector from GET …/stats: device counts, open connections, values
// written and refusals by reason since the gateway started.  Rates (writes/s) come from the
// difference between two samples; the last few minutes of samples are kept per connector
// for the sparklines.
import {sparkline} from "./chart.js";
import {api, fmtNumber, h} from "./lib.js";
import {href} from "./nav.js";

const REFUSAL_TYPES = "connection_refused,activation_refused,write_refused,request_refused";
const KEEP = 120; // samples per connector (6 minutes at one every 3 s)
const history = new Map(); // cid -> [{stats, t}]

export function forgetStats() { history.clear(); }

/** Fetch the connector's counters now and remember them. */
export async function sample(cid) {
  const stats = await api("GET", `/connectors/${encodeURIComponent(cid)}/stats`);
  const list = history.get(cid) || [];
  const last = list[list.length - 1];
  if (last && last.stats.started !== stats.started) list.length = 0; // the gateway restarted
  list.push({stats, t: stats.timestamp});
  if (list.length > KEEP) list.splice(0, list.length - KEEP);
  history.set(cid, list);
  return stats;
}

/** writes/s between consecutive samples (oldest first); empty before the second sample. */
export function writeRates(cid) {
  const list = history.get(cid) || [];
  const out = [];
  for (let i = 1; i < list.length; i++) {
    const dt = (list[i].t - list[i - 1].t) / 1e6;
    out.push(dt > 0 ? Math.max(0, list[i].stats.writes - list[i - 1].stats.writes) / dt : 0);
  }
  return out;
}

export const onlineSeries = (cid) => (history.get(cid) || []).map((x) => x.stats.devices.online);

/** Refusals by reason, biggest first, as "reason n" pills (or "none"). */
export function refusalPills(stats, cid) {
  const entries = Object.entries(stats.refused).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return h("span", {class: "muted"}, "none");
  return h("ul", {class: "pills"}, entries.map(([reason, n]) =>
    h("li", {}, h("a", {class: "pill warn", href: href(["c", cid, "events"], {type: REFUSAL_TYPES}), title: `refused for ${reason} since the gateway started`}, `${reason} ${n}`))));
}

/** The counter line under a connector's name (also used by the overview cards). */
export async function connectorCounters(cid) {
  const st = await sample(cid);
  const rates = writeRates(cid);
  const rate = rates.length ? rates[rates.length - 1] : 0;
  const d = st.devices;
  const dev = (status) => href(["c", cid, "devices"], status ? {status} : null);
  return [
    h("dl", {class: "counter-list"},
      h("div", {}, h("dt", {}, "Devices"), h("dd", {}, h("a", {href: dev(), "data-counter": "total"}, fmtNumber(d.total)))),
      h("div", {}, h("dt", {}, "Online"), h("dd", {}, h("a", {href: dev("online"), "data-counter": "online"}, fmtNumber(d.online)))),
      h("div", {}, h("dt", {}, "Locked"), h("dd", {}, h("a", {href: dev("locked"), "data-counter": "locked"}, fmtNumber(d.locked)))),
      h("div", {}, h("dt", {}, "Writes/s"), h("dd", {"data-counter": "writes"}, rate.toFixed(1), " ",
        sparkline(rates.slice(-40), {label: `writes per second, last ${rates.length} samples`, width: 80, height: 20}))),
      h("div", {class: "refusals"}, h("dt", {}, "Refusals"), h("dd", {"data-counter": "refused"}, refusalPills(st, cid)))),
  ];
}
