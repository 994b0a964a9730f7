// Places: every view of the console has a hash URL (#/c/<cid>/<tab>[/<item>]?<filters>), so
// a refresh, the back button and a shared link land where the operator was.

let renderer = () => {};

/** The shell registers the function that draws the current place. */
export function onNavigate(fn) { renderer = fn; }

/** The current place: path segments and query parameters of the hash. */
export function place() {
  const raw = location.hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const segs = path.split("/").filter(Boolean).map(decodeURIComponent);
  return {segs, params: new URLSearchParams(q >= 0 ? raw.slice(q + 1) : "")};
}

/** The hash URL of a place (empty parameters are left out). */
export function href(segs, params) {
  const entries = params ? [...new URLSearchParams(params)].filter(([, v]) => v !== "" && v != null) : [];
  const qs = new URLSearchParams(entries).toString();
  return "#/" + segs.map(encodeURIComponent).join("/") + (qs ? `?${qs}` : "");
}

/** Go to a place (a new history entry unless `replace`). */
export function go(segs, params, {replace = false} = {}) {
  const url = href(segs, params);
  if (replace) { history.replaceState(null, "", url); renderer(); }
  else if (location.hash === url) renderer();
  else location.hash = url;
}
