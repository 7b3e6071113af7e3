// Account page: polls the balance every second (Redis) and usage every 2 s (ClickHouse).
// Amounts arrive as integer micro-credits and are formatted here; no floats are summed.
// The pure helpers (formatting, axis ticks, grant names, runway text) are exported at the end
// when loaded outside a browser, for the unit tests.
"use strict";

const MICRO = 1000000;
const BALANCE_POLL_MS = 1000;
const USAGE_POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
  "September", "October", "November", "December"];
const AXIS_MIN_STEP = 10000; // 0.01 credit: axis labels never need more than 2 decimals
const FIELDS = ["balance", "spendable", "runway", "plan", "renewal", "monthly", "policy",
  "overage-limit", "reserved", "overage", "usage-events", "usage-total", "usage-overage",
  "ch-seq"];
const WHAT = { overview: "the balance", usage: "the usage history" };

const state = {
  key: null, account: null, overview: null, usage: null, timers: [],
  loaded: {}, errors: {}, chartWidth: 0,
};
const $ = (id) => document.getElementById(id);

// -- formatting (pure) -------------------------------------------------------------------

function credits(micro) {
  if (micro === null || micro === undefined) return "unlimited";
  const sign = micro < 0 ? "-" : "";
  const abs = Math.abs(micro);
  const whole = Math.floor(abs / MICRO).toLocaleString("en-US");
  const frac = String(abs % MICRO).padStart(6, "0").replace(/0+$/, "");
  return sign + whole + (frac ? "." + frac : "");
}

function day(ms) {
  if (!ms) return "–";
  return new Date(ms).toISOString().slice(0, 10);
}

/** "14 Dec" (UTC), with the year when it is not the year of `nowMs`. */
function dateLabel(ms, nowMs) {
  const d = new Date(ms);
  const text = d.getUTCDate() + " " + MONTHS[d.getUTCMonth()].slice(0, 3);
  const year = d.getUTCFullYear();
  return nowMs && new Date(nowMs).getUTCFullYear() !== year ? text + " " + year : text;
}

/** A month's name, with its year only when it is more than 6 months from `nowMs`. */
function monthLabel(year, month, nowMs) {
  const now = new Date(nowMs || Date.now());
  const apart = Math.abs(now.getUTCFullYear() * 12 + now.getUTCMonth() - (year * 12 + month));
  return apart > 6 ? MONTHS[month] + " " + year : MONTHS[month];
}

/** The epoch-ms after the first ":" of a grant id (`rollover:1793491200000`), else null. */
function idTime(grantId) {
  const i = grantId.indexOf(":");
  const tail = i < 0 ? "" : grantId.slice(i + 1);
  return /^\d{9,}$/.test(tail) ? Number(tail) : null;
}

/** A person's name for a grant; the raw id stays in the row's title and data-grant. */
function grantLabel(g, nowMs) {
  const at = idTime(g.grant_id);
  const when = at !== null ? at : g.effective_at;
  const dated = (label) => (g.effective_at ? label + ", " + dateLabel(g.effective_at, nowMs) : label);
  if (g.source === "plan" && when) {
    const d = new Date(when);
    return "Monthly credits, " + monthLabel(d.getUTCFullYear(), d.getUTCMonth(), nowMs);
  }
  if (g.source === "rollover" && when) {
    // rollover:<boundary>: what the period before the boundary left unused.
    const d = new Date(when);
    const month = (d.getUTCMonth() + 11) % 12;
    const year = month === 11 ? d.getUTCFullYear() - 1 : d.getUTCFullYear();
    return "Rollover from " + monthLabel(year, month, nowMs);
  }
  const names = { purchase: "Purchase", promotion: "Promotion", adjustment: "Adjustment",
    plan: "Monthly credits", rollover: "Rollover" };
  const source = String(g.source || "grant");
  return dated(names[source] || source.charAt(0).toUpperCase() + source.slice(1));
}

/** The smallest "nice" step (1, 2, 2.5 or 5 × 10^k micro) >= `raw`, a multiple of 0.01 credit. */
function niceStep(raw) {
  for (let power = AXIS_MIN_STEP; ; power *= 10) {
    for (const m of [1, 2, 2.5, 5]) {
      const step = power * m;
      if (step % AXIS_MIN_STEP === 0 && step >= raw) return step;
    }
  }
}

/** Round axis ticks (integer micro-credits) covering [lo, hi] in about `count` steps. */
function yTicks(lo, hi, count) {
  const step = niceStep(Math.max(1, Math.ceil((hi - lo) / count)));
  let first = Math.floor(lo / step) * step;
  let last = Math.ceil(hi / step) * step;
  if (first > lo) first -= step;
  if (last < hi) last += step;
  const ticks = [];
  for (let v = first; v <= last; v += step) ticks.push(v);
  return ticks;
}

function runwayText(r, nowMs) {
  switch (r.status) {
    case "runs_out":
      return "At this pace, credits run out on " + dateLabel(r.runout_ms, nowMs);
    case "outlasts":
      return "Credits outlast this period at the current pace";
    case "no_usage":
      return "No usage in the last 7 days";
    case "exhausted":
      return "No credits left";
    default:
      return "";
  }
}

// -- loading, error and data states --------------------------------------------------------

function skeleton(text, failed) {
  const span = document.createElement("span");
  span.className = failed ? "skeleton failed" : "skeleton";
  span.textContent = text;
  return span;
}

function setText(id, text) {
  $(id).textContent = text;
}

function setMicro(id, micro) {
  const node = $(id);
  node.textContent = credits(micro);
  node.dataset.micro = micro === null || micro === undefined ? "" : String(micro);
}

function placeholderRow(text, failed, columns) {
  const tr = document.createElement("tr");
  tr.className = "placeholder";
  const td = document.createElement("td");
  td.colSpan = columns || 5;
  td.appendChild(skeleton(text, failed));
  tr.appendChild(td);
  return tr;
}

/** Every field back to "Loading…" and every region busy (first load, account switch). */
function showLoading() {
  state.loaded = {};
  state.errors = {};
  state.chartWidth = 0;
  for (const id of FIELDS) {
    const node = $(id);
    node.replaceChildren(skeleton("Loading…"));
    if ("micro" in node.dataset) node.dataset.micro = "";
  }
  $("renewal").dataset.ms = "";
  Object.assign($("runway").dataset, { runoutMs: "", status: "" });
  $("runway").removeAttribute("title");
  for (const table of ["grants", "usage-table", "corrections-table"]) {
    const columns = $(table).tHead.rows[0].cells.length;
    $(table).tBodies[0].replaceChildren(placeholderRow("Loading…", false, columns));
  }
  const chart = document.createElement("div");
  chart.className = "chart-placeholder";
  chart.appendChild(skeleton("Loading…"));
  $("burndown").replaceChildren(chart);
  $("burndown-note").hidden = true;
  for (const region of document.querySelectorAll("[data-needs]")) {
    region.setAttribute("aria-busy", "true");
    region.dataset.state = "loading";
  }
  showStatus();
}

/** `kind` ("overview" or "usage") arrived: regions with all they need stop being busy. */
function markLoaded(kind) {
  state.loaded[kind] = true;
  delete state.errors[kind];
  for (const region of document.querySelectorAll("[data-needs]")) {
    const needs = region.dataset.needs.split(" ");
    if (needs.includes(kind) && needs.every((k) => state.loaded[k])) {
      region.setAttribute("aria-busy", "false");
      region.dataset.state = "ready";
    }
  }
  showStatus();
}

/** `kind` failed: before its first data the fields waiting on it say so; then a banner. */
function markFailed(kind, err) {
  const since = state.loaded[kind] ? "showing the last figures received; " : "";
  state.errors[kind] =
    "Couldn't load " + WHAT[kind] + " (" + err.message + "); " + since + "retrying…";
  if (!state.loaded[kind]) {
    for (const region of document.querySelectorAll("[data-needs]")) {
      if (!region.dataset.needs.split(" ").includes(kind)) continue;
      region.setAttribute("aria-busy", "false");
      region.dataset.state = "error";
      for (const s of region.querySelectorAll(".skeleton")) {
        if (s.closest("[data-needs]") !== region) continue; // a nested region has its own state
        s.className = "skeleton failed";
        s.textContent = "Unavailable";
      }
    }
  }
  showStatus();
}

function showStatus() {
  const messages = Object.values(state.errors);
  $("status").hidden = messages.length === 0;
  $("status").textContent = messages.join(" ");
  $("error").textContent = messages.length ? " · last update failed, retrying" : "";
}

// -- API and polling ---------------------------------------------------------------------

async function api(path) {
  const res = await fetch(path, { headers: { "X-API-Key": state.key }, cache: "no-store" });
  let body = {};
  try {
    body = await res.json();
  } catch (_) {
    if (res.ok) throw new Error("unreadable answer");
  }
  if (!res.ok) {
    const err = new Error(body.message || res.statusText || "HTTP " + res.status);
    err.status = res.status;
    throw err;
  }
  return body;
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  if (key) {
    sessionStorage.setItem("metering.key", key);
    params.delete("key");
    // Keep the key out of the address bar (and screenshots) once stored.
    history.replaceState(null, "", location.pathname + (params.toString() ? "#" + params : ""));
  }
  return { key: key || sessionStorage.getItem("metering.key"), account: params.get("account") };
}

function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function start(key, wanted) {
  state.key = key;
  // Show the page's skeleton at once: the first figures are on their way.
  $("login").hidden = true;
  $("main").hidden = false;
  showLoading();
  let me;
  try {
    me = await api("/v1/me");
  } catch (err) {
    sessionStorage.removeItem("metering.key");
    showLogin(err.status === 401 ? "That key is not valid." : String(err.message));
    return;
  }
  const select = $("account-select");
  select.replaceChildren(
    ...me.accounts.map((a) => {
      const opt = document.createElement("option");
      opt.value = a;
      opt.textContent = a;
      return opt;
    }),
  );
  select.disabled = !me.admin || me.accounts.length < 2;
  const initial = wanted && me.accounts.includes(wanted) ? wanted : me.accounts[0];
  if (!initial) {
    markFailed("overview", new Error("no accounts yet"));
    markFailed("usage", new Error("no accounts yet"));
    return;
  }
  select.value = initial;
  select.onchange = () => choose(select.value);
  choose(initial);
}

function choose(account) {
  state.timers.forEach(clearTimeout);
  state.timers = [];
  const switched = state.account !== null && state.account !== account;
  state.account = account;
  state.overview = null;
  state.usage = null;
  if (switched) showLoading();
  const params = new URLSearchParams(location.hash.slice(1));
  params.set("account", account);
  history.replaceState(null, "", location.pathname + "#" + params);
  loop(pollOverview, BALANCE_POLL_MS, account, "overview");
  loop(pollUsage, USAGE_POLL_MS, account, "usage");
}

function loop(fn, every, account, kind) {
  const tick = async () => {
    if (state.account !== account) return;
    try {
      await fn(account);
      if (state.account === account) markLoaded(kind);
    } catch (err) {
      if (state.account === account) markFailed(kind, err);
      if (kind === "overview") $("live").classList.remove("on");
    }
    if (state.account === account) state.timers.push(setTimeout(tick, every));
  };
  tick();
}

async function pollOverview(account) {
  const o = await api("/v1/accounts/" + encodeURIComponent(account) + "/overview");
  if (state.account !== account) return;
  state.overview = o;
  setMicro("balance", o.available);
  setMicro("spendable", o.spendable);
  setText("plan", o.plan || "no plan");
  setText("renewal", day(o.period_end));
  $("renewal").dataset.ms = String(o.period_end);
  setMicro("monthly", o.monthly_credits);
  setText("policy", o.policy);
  if (o.policy === "unlimited") setMicro("overage-limit", null);
  else setMicro("overage-limit", o.policy === "allow" ? o.overage_limit : 0);
  setMicro("reserved", o.reserved);
  setMicro("overage", o.overage_used);
  const pct = o.overage_limit > 0 ? Math.min(100, (100 * o.overage_used) / o.overage_limit) : 0;
  $("overage-bar").style.width = pct + "%";
  $("overage-card").classList.toggle("active", o.overage_used > 0);
  $("overage-note").textContent =
    o.policy === "block"
      ? "hard limit: requests beyond the balance are refused"
      : o.overage_used > 0
        ? "billable overage this period (" + pct.toFixed(0) + "% of the limit)"
        : "billable usage beyond your credits this period";
  renderGrants(o.grants, o.now);
  $("updated").textContent = "balance as of " + new Date().toLocaleTimeString() + " (seq " + o.seq + ")";
  $("updated").dataset.seq = String(o.seq);
  $("live").classList.add("on");
  renderBurndown();
}

function cellsRow(cells) {
  const tr = document.createElement("tr");
  for (const [text, cls, micro, title] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (micro !== undefined) td.dataset.micro = String(micro);
    if (title) td.title = title;
    tr.appendChild(td);
  }
  return tr;
}

function renderGrants(grants, nowMs) {
  const rows = grants.map((g) => {
    const tr = cellsRow([
      [grantLabel(g, nowMs), "grant-name", undefined, g.grant_id],
      [g.source, ""],
      [credits(g.remaining), "num", g.remaining],
      [credits(g.amount), "num", g.amount],
      [g.expires_at ? day(g.expires_at) : "never", ""],
    ]);
    tr.dataset.grant = g.grant_id;
    return tr;
  });
  if (!rows.length) rows.push(placeholderRow("No grants"));
  $("grants").tBodies[0].replaceChildren(...rows);
}

async function pollUsage(account) {
  const u = await api("/v1/accounts/" + encodeURIComponent(account) + "/usage");
  if (state.account !== account) return;
  state.usage = u;
  $("period-label").textContent = u.period.start + " → " + u.period.end;
  let events = 0;
  let total = 0;
  let over = 0;
  const rows = u.rows.map((r) => {
    events += r.events;
    total += r.credits;
    over += r.overage_credits;
    const tr = cellsRow([
      [r.subject, ""],
      [r.feature, ""],
      [String(r.events), "num events"],
      [credits(r.credits), "num credits", r.credits],
      [credits(r.overage_credits), "num overage", r.overage_credits],
    ]);
    tr.dataset.subject = r.subject;
    tr.dataset.feature = r.feature;
    return tr;
  });
  if (!rows.length) rows.push(placeholderRow("No usage this period"));
  $("usage-table").tBodies[0].replaceChildren(...rows);
  setText("usage-events", String(events));
  setMicro("usage-total", total);
  setMicro("usage-overage", over);
  renderCorrections(u.corrections || []);
  setText("ch-seq", String(u.ledger_max_seq));
  if (u.runway) renderRunway(u.runway);
  renderBurndown();
}

function renderCorrections(corrections) {
  const rows = corrections.map((c) => {
    const tr = cellsRow([
      [c.event_id, "event-id", undefined, "command " + c.command_id],
      [c.kind === "amend" ? "amended" : "voided", ""],
      [c.subject || "", ""],
      [credits(c.credits_returned), "num", c.credits_returned],
      [c.kind === "amend" ? credits(c.credits_charged) : "", "num", c.credits_charged],
      [c.reason || "", ""],
      [day(c.recorded_at), ""],
    ]);
    tr.dataset.event = c.event_id;
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.className = "muted";
    td.colSpan = 7;
    td.textContent = "No corrections this period";
    tr.appendChild(td);
    rows.push(tr);
  }
  $("corrections-table").tBodies[0].replaceChildren(...rows);
}

function renderRunway(r) {
  const node = $("runway");
  node.textContent = runwayText(r, r.until);
  node.dataset.status = r.status;
  node.dataset.runoutMs = r.runout_ms === null || r.runout_ms === undefined ? "" : String(r.runout_ms);
  node.title =
    credits(r.used) + " credits spent from " + dateLabel(r.since, r.until) + " to " +
    dateLabel(r.until, r.until) + "; " + credits(r.available) + " available; the period ends " +
    day(r.period_end) + ".";
}

// -- burn-down chart -----------------------------------------------------------------------

function el(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function textWidth(node) {
  try {
    const w = node.getComputedTextLength();
    if (w > 0) return w;
  } catch (_) {
    // not laid out (hidden): estimate below
  }
  return node.textContent.length * 7;
}

// Balance (step line) and overage (below zero) over the billing period, plus an even-pace
// line from the period's starting balance to zero at renewal. Drawn at the box's own width
// (1 unit = 1 px, so text keeps its size on phones); the y-axis gutter is as wide as the
// widest label. A history too short to show as a line (an account that started near the end
// of the period, or a period a few hours old) is drawn as its current balance across the
// period, with dots at its opening and current balance.
function renderBurndown() {
  const o = state.overview;
  const u = state.usage;
  if (!o || !u) return;
  const box = $("burndown");
  const W = Math.max(240, Math.floor(box.clientWidth || 760));
  const H = W < 520 ? 210 : 250;
  state.chartWidth = Math.floor(box.clientWidth);
  const start = o.period_start || Date.parse(u.period.start);
  const end = Math.max(start + 1, o.period_end || Date.parse(u.period.end));
  const points = u.burndown.map((p) => [p.at, p.balance_after, p.overage_after]);
  const now = Math.min(Math.max(o.now, start), end);
  // Even pace starts after the period's opening grants (reset, rollover, plan grant).
  const spending = new Set(["USAGE_DEBIT", "OVERAGE", "USAGE_REJECTED"]);
  let opening = u.burndown.findIndex((p) => spending.has(p.type));
  if (opening < 0) opening = u.burndown.length;
  const [paceAt, paceFrom] =
    opening > 0 ? [points[opening - 1][0], points[opening - 1][1]] : [start, o.available];
  points.push([now, o.available, o.overage_used]);
  const top = Math.max(1, ...points.map((p) => p[1]), o.monthly_credits || 0);
  const bottom = Math.max(0, ...points.map((p) => p[2]));
  const ticks = yTicks(-bottom, top, H < 230 ? 4 : 5);
  const lo = ticks[0];
  const hi = ticks[ticks.length - 1];

  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
    "aria-label": "balance over the billing period" });
  box.replaceChildren(svg);
  const labels = ticks.map((v) => {
    const t = el("text", { class: "y-label", "text-anchor": "end", "font-size": 11,
      fill: "#6b7385", "data-micro": v }, credits(v));
    svg.appendChild(t);
    return t;
  });
  const L = Math.ceil(Math.max(...labels.map(textWidth))) + 14;
  const R = 14, T = 12, B = 28;
  const plotW = W - L - R;
  const x = (t) => L + (plotW * (t - start)) / (end - start);
  const y = (v) => T + ((H - T - B) * (hi - v)) / (hi - lo);
  const first = svg.firstChild;
  const before = (node) => svg.insertBefore(node, first);
  before(el("rect", { x: L, y: T, width: plotW, height: H - T - B, fill: "#fbfcfd" }));
  ticks.forEach((v, i) => {
    before(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v),
      stroke: v === 0 ? "#c9ced8" : "#e3e6ec" }));
    labels[i].setAttribute("x", L - 6);
    labels[i].setAttribute("y", (y(v) + 4).toFixed(1));
  });
  const axis = { "font-size": 11, fill: "#6b7385" };
  svg.appendChild(el("text", { ...axis, x: L, y: H - 8, class: "x-label" }, day(start)));
  svg.appendChild(el("text", { ...axis, x: W - R, y: H - 8, "text-anchor": "end",
    class: "x-label" }, day(end)));

  const minSpan = Math.max(16, plotW * 0.04); // narrower than this reads as a vertical line
  const short = x(points[points.length - 1][0]) - x(points[0][0]) < minSpan;
  if (x(end) - x(paceAt) >= minSpan) {
    svg.appendChild(el("line", { x1: x(paceAt), y1: y(paceFrom), x2: x(end), y2: y(0),
      stroke: "#9aa3b5", "stroke-dasharray": "5 4", class: "pace-line" }));
  }
  let d = "";
  let over = "";
  if (short) {
    d = `M${L},${y(o.available).toFixed(1)}H${W - R}`;
    over = `M${L},${y(-o.overage_used).toFixed(1)}H${W - R}`;
  } else {
    points.forEach(([t, bal, ov], i) => {
      const px = x(t).toFixed(1);
      d += i === 0 ? `M${px},${y(bal).toFixed(1)}` : `H${px}V${y(bal).toFixed(1)}`;
      over += i === 0 ? `M${px},${y(-ov).toFixed(1)}` : `H${px}V${y(-ov).toFixed(1)}`;
    });
  }
  svg.appendChild(el("path", { d, fill: "none", stroke: "#2f6fed", "stroke-width": 2.2,
    class: "balance-line", "data-short": short ? "1" : "0" }));
  if (bottom > 0) {
    svg.appendChild(el("path", { d: over, fill: "none", stroke: "#d9480f", "stroke-width": 2,
      class: "overage-line" }));
  }
  // Dots: every point of a sparse history; for a short one, its opening and current balance.
  const opened = opening > 0 ? [[paceAt, paceFrom]] : [];
  const dots = short ? [...opened, points[points.length - 1]] : points.length <= 3 ? points : [];
  if (dots.length) {
    for (const [t, bal] of dots) {
      svg.appendChild(el("circle", { cx: x(t).toFixed(1), cy: y(bal).toFixed(1), r: 3.5,
        fill: "#fff", stroke: "#2f6fed", "stroke-width": 2, class: "point" }));
    }
  }
  svg.appendChild(el("line", { x1: x(now), x2: x(now), y1: T, y2: H - B, stroke: "#1d2433",
    "stroke-opacity": 0.25 }));
  const note = $("burndown-note");
  note.hidden = !short;
  note.textContent = short
    ? "Little history yet (since " + dateLabel(points[0][0], o.now) +
      "): the line shows the current balance across the period; dots mark the opening and " +
      "current balance."
    : "";
}

if (typeof document !== "undefined") {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key-input").value.trim();
    if (key) {
      sessionStorage.setItem("metering.key", key);
      start(key, null);
    }
  });
  // Redraw the chart at its new width (rotation, window resize).
  if (typeof ResizeObserver !== "undefined") {
    new ResizeObserver(() => {
      if (Math.floor($("burndown").clientWidth) !== state.chartWidth) renderBurndown();
    }).observe($("burndown"));
  }
  const initial = readHash();
  if (initial.key) start(initial.key, initial.account);
  else showLogin();
}

if (typeof module !== "undefined" && module.exports) {
  module.exports = { credits, day, dateLabel, monthLabel, idTime, grantLabel, niceStep, yTicks,
    runwayText };
}
