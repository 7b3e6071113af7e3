// Account page: polls the balance every second (Redis) and usage every 2 s (ClickHouse).
// Amounts arrive as integer micro-credits and are formatted here; no floats are summed.
"use strict";

const MICRO = 1000000;
const BALANCE_POLL_MS = 1000;
const USAGE_POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

const state = { key: null, account: null, overview: null, usage: null, timers: [] };
const $ = (id) => document.getElementById(id);

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

function setMicro(id, micro) {
  const el = $(id);
  el.textContent = credits(micro);
  el.dataset.micro = micro === null || micro === undefined ? "" : String(micro);
}

async function api(path) {
  const res = await fetch(path, { headers: { "X-API-Key": state.key }, cache: "no-store" });
  const body = await res.json();
  if (!res.ok) {
    const err = new Error(body.message || res.statusText);
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
  let me;
  try {
    me = await api("/v1/me");
  } catch (err) {
    sessionStorage.removeItem("metering.key");
    showLogin(err.status === 401 ? "That key is not valid." : String(err.message));
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
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
    $("error").textContent = "no accounts yet";
    return;
  }
  select.value = initial;
  select.onchange = () => choose(select.value);
  choose(initial);
}

function choose(account) {
  state.timers.forEach(clearTimeout);
  state.timers = [];
  state.account = account;
  state.overview = null;
  state.usage = null;
  const params = new URLSearchParams(location.hash.slice(1));
  params.set("account", account);
  history.replaceState(null, "", location.pathname + "#" + params);
  loop(pollOverview, BALANCE_POLL_MS, account);
  loop(pollUsage, USAGE_POLL_MS, account);
}

function loop(fn, every, account) {
  const tick = async () => {
    if (state.account !== account) return;
    try {
      await fn(account);
      $("error").textContent = "";
    } catch (err) {
      $("error").textContent = " · " + err.message;
      $("live").classList.remove("on");
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
  $("plan").textContent = o.plan || "no plan";
  $("renewal").textContent = day(o.period_end);
  $("renewal").dataset.ms = String(o.period_end);
  setMicro("monthly", o.monthly_credits);
  $("policy").textContent = o.policy;
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
  renderGrants(o.grants);
  $("updated").textContent = "balance as of " + new Date().toLocaleTimeString() + " (seq " + o.seq + ")";
  $("updated").dataset.seq = String(o.seq);
  $("live").classList.add("on");
  renderBurndown();
}

function renderGrants(grants) {
  const rows = grants.map((g) => {
    const tr = document.createElement("tr");
    tr.dataset.grant = g.grant_id;
    const cells = [
      [g.grant_id, ""],
      [g.source, ""],
      [credits(g.remaining), "num", g.remaining],
      [credits(g.amount), "num", g.amount],
      [g.expires_at ? day(g.expires_at) : "never", ""],
    ];
    for (const [text, cls, micro] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      if (micro !== undefined) td.dataset.micro = String(micro);
      tr.appendChild(td);
    }
    return tr;
  });
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
    const tr = document.createElement("tr");
    tr.dataset.subject = r.subject;
    tr.dataset.feature = r.feature;
    const cells = [
      [r.subject, ""],
      [r.feature, ""],
      [String(r.events), "num events"],
      [credits(r.credits), "num credits", r.credits],
      [credits(r.overage_credits), "num overage", r.overage_credits],
    ];
    for (const [text, cls, micro] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      if (micro !== undefined) td.dataset.micro = String(micro);
      tr.appendChild(td);
    }
    return tr;
  });
  $("usage-table").tBodies[0].replaceChildren(...rows);
  $("usage-events").textContent = String(events);
  setMicro("usage-total", total);
  setMicro("usage-overage", over);
  $("ch-seq").textContent = String(u.ledger_max_seq);
  renderBurndown();
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Balance (step line) and overage (below zero) over the billing period, plus an even-pace
// line from the period's starting balance to zero at renewal.
function renderBurndown() {
  const o = state.overview;
  const u = state.usage;
  if (!o || !u) return;
  const start = o.period_start || Date.parse(u.period.start);
  const end = o.period_end || Date.parse(u.period.end);
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
  const W = 760, H = 240, L = 70, R = 16, T = 12, B = 28;
  const x = (t) => L + ((W - L - R) * (t - start)) / Math.max(1, end - start);
  const y = (v) => T + ((H - T - B) * (top - v)) / (top + bottom);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  svg.appendChild(el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fbfcfd" }));
  for (const v of [top, top / 2, 0]) {
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ec" }));
    svg.appendChild(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11,
      fill: "#6b7385" }, credits(Math.round(v))));
  }
  svg.appendChild(el("text", { x: L, y: H - 8, "font-size": 11, fill: "#6b7385" }, day(start)));
  svg.appendChild(el("text", { x: W - R, y: H - 8, "font-size": 11, fill: "#6b7385",
    "text-anchor": "end" }, day(end)));
  svg.appendChild(el("line", { x1: x(paceAt), y1: y(paceFrom), x2: x(end), y2: y(0),
    stroke: "#9aa3b5", "stroke-dasharray": "5 4" }));
  let d = "";
  let over = "";
  points.forEach(([t, bal, ov], i) => {
    const px = x(t).toFixed(1);
    d += i === 0 ? `M${px},${y(bal).toFixed(1)}` : `H${px}V${y(bal).toFixed(1)}`;
    over += i === 0 ? `M${px},${y(-ov).toFixed(1)}` : `H${px}V${y(-ov).toFixed(1)}`;
  });
  svg.appendChild(el("path", { d, fill: "none", stroke: "#2f6fed", "stroke-width": 2.2,
    class: "balance-line" }));
  if (bottom > 0) {
    svg.appendChild(el("path", { d: over, fill: "none", stroke: "#d9480f", "stroke-width": 2 }));
  }
  svg.appendChild(el("line", { x1: x(now), x2: x(now), y1: T, y2: H - B, stroke: "#1d2433",
    "stroke-opacity": 0.25 }));
  $("burndown").replaceChildren(svg);
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = $("key-input").value.trim();
  if (key) {
    sessionStorage.setItem("metering.key", key);
    start(key, null);
  }
});

const initial = readHash();
if (initial.key) start(initial.key, initial.account);
else showLogin();
