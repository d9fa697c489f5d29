// ccmeter console: a read-only single page over the console API (/openapi.json). Vanilla JS, no build step.
// Routes: #/ (accounts overview) and #/accounts/<id>[?period=previous&day=YYYY-MM-DD].
// Served by `ccmeter console --snapshot` (no token) or live by a worker: there every /api request needs a bearer
// token, which the page asks for after a 401 and keeps in sessionStorage (this tab only).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const view = document.getElementById("view");
const state = { sortKey: "account_id", sortDir: 1, filter: "", page: null };
const TOKEN_KEY = "ccmeter-token";

// -- helpers ------------------------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

async function getJson(url) {
  const headers = { Accept: "application/json" };
  const token = storedToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const words = body.reason && body.error !== body.reason ? `${body.error}: ${body.reason}` : body.error;
    throw new ApiError(response.status, words || `${response.status} ${response.statusText}`);
  }
  return body;
}

// A live worker refused the request (401): ask for a token, keep it for this tab, show the page again.
function askToken(error) {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", spellcheck: "false",
    required: true, "aria-describedby": "token-help" });
  const form = h("form", { class: "toolbar", id: "token-form", onsubmit: (e) => {
    e.preventDefault();
    try { sessionStorage.setItem(TOKEN_KEY, input.value.trim()); } catch { /* private mode: not kept */ }
    route();
  } }, h("label", { for: "token" }, "API token"), input, h("button", { class: "button", type: "submit" }, "Use token"));
  view.replaceChildren(h("h1", {}, "API token needed"),
    h("p", { class: "error", role: "alert" }, error.message),
    h("p", { class: "muted", id: "token-help" }, "This console is served live by a ccmeter worker: every request needs ",
      "a token (", h("code", {}, "ccmeter tokens new"), "). It is kept in this tab only and sent as ",
      h("code", {}, "Authorization: Bearer"), "."),
    form);
  input.focus();
}

function showTokenControl() {
  const line = document.getElementById("token-line");
  if (!line) return;
  line.replaceChildren();
  if (!storedToken()) return;
  line.append(h("button", { class: "button small", type: "button", id: "forget-token", onclick: () => {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ }
    route();
  } }, "Forget token"));
}

const enc = encodeURIComponent;
const accountApi = (id) => `/api/accounts/${enc(id)}`;

function localTime(iso, zone, withDate = true) {
  if (!iso) return "–";
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23",
  }).formatToParts(new Date(iso));
  const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
  const time = `${p.hour}:${p.minute}`;
  return withDate ? `${p.year}-${p.month}-${p.day} ${time}` : time;
}

function num(value, digits = 0) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function status(row) {
  if (row.over_allowance > 0 || row.usage > row.licenses + row.overage_allowance) return "over-allowance";
  if (row.usage > row.licenses || row.billable_overage > 0) return "over-licenses";
  return "";
}

function badge(kind) {
  if (kind === "over-allowance") return h("span", { class: "badge over-allowance" }, "over allowance");
  if (kind === "over-licenses") return h("span", { class: "badge over-licenses" }, "over licenses");
  return null;
}

function usageBar(usage, licenses, allowance) {
  const top = Math.max(usage, licenses + allowance, 1);
  const pct = (x) => `${Math.min(100, (100 * x) / top).toFixed(1)}%`;
  return h("div", { class: "bar", role: "img", "aria-label": `${usage} of ${licenses} licenses in use` },
    h("div", { class: `fill${usage > licenses ? " over" : ""}`, style: `width:${pct(usage)}` }),
    h("div", { class: "mark", style: `left:${pct(licenses)}`, title: "licenses" }),
    allowance > 0 ? h("div", { class: "mark allow", style: `left:${pct(licenses + allowance)}`,
      title: "licenses + allowance" }) : null);
}

function showError(error) {
  view.replaceChildren(h("p", { class: "error", role: "alert" }, error.message || String(error)),
    h("p", {}, h("a", { href: "#/" }, "Back to all accounts")));
}

// -- accounts overview ----------------------------------------------------------------------------------------------

const COLUMNS = [
  ["account_id", "Account", false],
  ["usage", "Usage now", true],
  ["licenses", "Licenses", true],
  ["overage_allowance", "Allowance", true],
  ["headroom", "Headroom", true],
  ["peak_usage", "Period peak", true],
  ["billable_overage", "Billable overage", true],
  ["over_allowance", "Over allowance", true],
  ["data_through", "Data through", false],
];

async function showAccounts() {
  const data = await getJson("/api/accounts");
  showSource(data.source);
  document.title = "Accounts · ccmeter console";
  const tbody = h("tbody");
  const headRow = h("tr");
  const filter = h("input", { id: "filter", type: "search", value: state.filter, placeholder: "account id",
    "aria-controls": "accounts-table", autocomplete: "off" });
  const count = h("p", { class: "muted", "aria-live": "polite", id: "accounts-count" });

  function render() {
    const needle = state.filter.trim().toLowerCase();
    const rows = data.accounts.filter((row) => row.account_id.toLowerCase().includes(needle));
    rows.sort((a, b) => {
      const x = a[state.sortKey], y = b[state.sortKey];
      if (x === y) return a.account_id < b.account_id ? -1 : 1;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * state.sortDir;
    });
    headRow.replaceChildren(...COLUMNS.map(([key, label, numeric]) => h("th", {
      scope: "col", class: numeric ? "num" : null,
      "aria-sort": key === state.sortKey ? (state.sortDir > 0 ? "ascending" : "descending") : "none",
    }, h("button", { type: "button", "data-key": key, onclick: () => sortBy(key) }, label))));
    tbody.replaceChildren(...rows.map((row) => {
      const kind = status(row);
      return h("tr", { class: kind || null, "data-account": row.account_id },
        h("th", { scope: "row" }, h("a", { href: `#/accounts/${enc(row.account_id)}` }, row.account_id), badge(kind)),
        h("td", { class: "num" }, h("div", { class: "usage-cell" }, h("span", { class: "usage" }, row.usage),
          usageBar(row.usage, row.licenses, row.overage_allowance))),
        h("td", { class: "num" }, row.licenses),
        h("td", { class: "num" }, row.overage_allowance),
        h("td", { class: "num" }, row.headroom),
        h("td", { class: "num peak" }, row.peak_usage ?? "–"),
        h("td", { class: "num billable" }, row.billable_overage ?? "–"),
        h("td", { class: "num over-allowance" }, row.over_allowance ?? "–"),
        h("td", { class: "nowrap", title: `${row.data_through || "nothing known"} UTC` },
          localTime(row.data_through, row.timezone), h("small", { class: "muted zone" }, row.timezone)));
    }));
    count.textContent = `${rows.length} of ${data.accounts.length} accounts`;
  }

  function sortBy(key) {
    state.sortDir = state.sortKey === key ? -state.sortDir : 1;
    state.sortKey = key;
    render();
    headRow.querySelector(`button[data-key="${key}"]`).focus();
  }

  filter.addEventListener("input", () => { state.filter = filter.value; render(); });
  render();
  const live = data.source && data.source.kind === "live";
  view.replaceChildren(
    h("h1", {}, "Accounts"),
    h("div", { class: "toolbar" }, h("label", { for: "filter" }, "Filter by account"), filter, count),
    h("p", { class: "muted", id: "accounts-caption" }, live
      ? "Live usage now (provisional). The period's peak and overage need the account's history: use the snapshot console."
      : "Usage now and the current billing period so far; peaks and overage up to each account's data through."),
    h("div", { class: "table-wrap" },
      h("table", { id: "accounts-table", "aria-describedby": "accounts-caption" },
        h("thead", {}, headRow), tbody)));
}

function showSource(source) {
  const line = document.getElementById("source");
  if (!source) return;
  if (source.kind === "live") {
    line.textContent = `Live: workers of ${source.name} · ${source.workers} answered · ` +
      `${source.partitions.length} partitions`;
    return;
  }
  line.textContent = `Snapshot ${source.name} · written ${source.created_at || "–"} · events up to ` +
    `${source.watermark || "–"} (UTC)`;
}

// -- account page ---------------------------------------------------------------------------------------------------

async function showAccount(account, params) {
  const period = params.get("period") === "previous" ? "previous" : "current";
  const [usage, letters] = await Promise.all([
    getJson(`${accountApi(account)}/usage`),
    getJson(`${accountApi(account)}/dead-letters?limit=10`).catch((error) => {
      if (error.status !== 501) throw error;
      return { unavailable: error.message };
    }),
  ]);
  let report = null, reportError = null;
  try {
    report = await getJson(`${accountApi(account)}/report?period=${period}`);
  } catch (error) {
    reportError = error;
  }
  document.title = `${account} · ccmeter console`;
  const zone = usage.plan.timezone;
  const periodSelect = h("select", { id: "period", onchange: (e) => go(account, e.target.value, null) },
    h("option", { value: "current", selected: period === "current" }, "Current period"),
    h("option", { value: "previous", selected: period === "previous" }, "Previous period"));
  const reportUrl = (fmt) => `${accountApi(account)}/report?period=${period}&format=${fmt}`;
  const fileBase = report ? `${account}-${report.from}-${report.to}` : account;
  const nowKind = usage.usage > usage.licenses + usage.overage_allowance ? "over-allowance"
    : usage.usage > usage.licenses ? "over-licenses" : "";

  const parts = [
    h("p", {}, h("a", { href: "#/" }, "← All accounts")),
    h("h1", {}, account),
    h("p", { class: "muted" }, `Timezone ${zone} · data through `,
      h("strong", { id: "data-through" }, localTime(usage.data_through, zone)),
      ` (${usage.data_through || "nothing known yet"} UTC)`),
    h("dl", { class: "cards", "aria-label": "Usage now" },
      card("Usage now", h("span", { id: "usage-now" }, usage.usage),
        usage.as_of && usage.as_of !== usage.data_through ? `live, as of ${localTime(usage.as_of, zone)}`
          : "as of data through", nowKind),
      card("Licenses", h("span", { id: "licenses" }, usage.licenses), `+ ${usage.overage_allowance} allowance`),
      card("Headroom", h("span", { id: "headroom" }, usage.headroom), "licenses − usage"),
      card("Today's peak", h("span", { id: "today-peak" }, usage.today_peak),
        usage.today_peak_at ? `at ${localTime(usage.today_peak_at, zone, false)} on ${usage.today}` : "–")),
  ];

  parts.push(h("div", { class: "toolbar" }, h("label", { for: "period" }, "Billing period"), periodSelect,
    report ? h("a", { class: "button", id: "export-csv", href: reportUrl("csv"), download: `${fileBase}.csv` },
      "Export report CSV") : null,
    report ? h("a", { class: "button", id: "export-json", href: reportUrl("json"), download: `${fileBase}.json` },
      "Export report JSON") : null));

  if (reportError) {
    parts.push(h("p", { class: reportError.status === 501 ? "muted" : "error", role: "alert", id: "report-error" },
      reportError.message));
  } else {
    const overKind = report.over_allowance > 0 ? "over-allowance" : report.billable_overage > 0 ? "over-licenses" : "";
    parts.push(
      h("h2", {}, `${period === "current" ? "Current" : "Previous"} period: ${report.from} to ${report.to}`,
        report.complete ? "" : h("span", { class: "muted" }, " (partial: so far)"),
        report.restatement === "restated" ? h("span", { class: "badge over-licenses" }, "restated") : null),
      h("dl", { class: "cards", "aria-label": "Billing period" },
        card("Peak usage", h("span", { id: "period-peak" }, report.peak_usage),
          report.peak_at ? `at ${localTime(report.peak_at, zone)}` : "–"),
        card("Billable overage", h("span", { id: "billable-overage" }, report.billable_overage),
          report.complete ? "final" : "so far", overKind),
        card("Over allowance", h("span", { id: "over-allowance" }, report.over_allowance),
          `allowance ${report.overage_allowance}`, report.over_allowance > 0 ? "over-allowance" : ""),
        card("License hours", h("span", { id: "license-hours" }, num(report.license_hours, 1)),
          `${num(report.seconds_over_licenses / 3600, 1)} h over licenses`),
        card("Distinct users", h("span", { id: "distinct-users" }, report.distinct_users), "counted in the period")),
      h("p", { class: "rule", id: "billable-rule" }, usage.billable_rule),
      h("h3", {}, "Daily peaks"),
      legend(),
      dailyChart(account, period, report, usage),
      h("div", { class: "grid2" },
        h("section", { "aria-labelledby": "peak-users-title" },
          h("h2", { id: "peak-users-title" }, "Counted at the period's peak"),
          report.peak_at ? h("p", { class: "muted" }, `${report.peak_usage} users at ${localTime(report.peak_at, zone)}`)
            : h("p", { class: "muted" }, "No one was counted in this period."),
          userList(report.peak_users, "peak-users")),
        h("section", { id: "day-section", "aria-labelledby": "day-title" })));
  }
  parts.push(deadLetters(letters));
  view.replaceChildren(...parts);
  state.page = { account, period, report, usage };
  if (report) {
    const days = report.days.filter((d) => d.peak_usage !== null);
    const wanted = params.get("day");
    const day = days.find((d) => d.date === wanted) || days.find((d) => d.date === usage.today) || days[days.length - 1];
    if (day) await showDay(account, period, report, usage, day.date);
    else document.getElementById("day-section").append(h("h2", { id: "day-title" }, "Day"),
      h("p", { class: "muted" }, "Nothing is known of this period's days yet."));
  }
}

function go(account, period, day) {
  const query = new URLSearchParams();
  if (period && period !== "current") query.set("period", period);
  if (day) query.set("day", day);
  const text = query.toString();
  location.hash = `#/accounts/${enc(account)}${text ? "?" + text : ""}`;
}

function card(label, value, note, kind) {
  return h("div", { class: `card${kind ? " " + kind : ""}` }, h("dt", {}, label),
    h("dd", {}, value, note ? h("small", {}, note) : null));
}

function legend() {
  return h("ul", { class: "legend", "aria-hidden": "true" },
    h("li", {}, h("span", { class: "key-usage" }), "usage (peak)"),
    h("li", {}, h("span", { class: "key-licenses" }), "licenses"),
    h("li", {}, h("span", { class: "key-allowance" }), "licenses + allowance"),
    h("li", {}, h("span", { class: "key-through" }), "data through (nothing known after)"));
}

function userList(users, id) {
  if (!users.length) return h("ul", { class: "users", id });
  return h("ul", { class: "users", id }, users.map((u) => {
    const presences = [...u.devices, ...(u.portal ? ["portal"] : []), ...(u.api ? ["api"] : [])];
    return h("li", { "data-user": u.user_id }, h("strong", {}, u.user_id), ` – ${presences.join(", ")}`);
  }));
}

function hoursOfDay(localIso) {
  const match = /T(\d\d):(\d\d):(\d\d)/.exec(localIso || "");
  return match ? (+match[1] + +match[2] / 60 + +match[3] / 3600) : 0;
}

// Steps as an SVG path: y(values[k]) over [x(k), x(k + 1)).
function stepPath(values, x, y) {
  let path = "";
  values.forEach((v, k) => {
    path += `${k === 0 ? "M" : "L"}${x(k).toFixed(1)},${y(v).toFixed(1)}L${x(k + 1).toFixed(1)},${y(v).toFixed(1)}`;
  });
  return path;
}

function frame(width, height, pad, n, top) {
  const x = (k) => pad.left + (k * (width - pad.left - pad.right)) / Math.max(n, 1);
  const y = (v) => height - pad.bottom - (v * (height - pad.top - pad.bottom)) / top;
  const ticks = [];
  const step = Math.max(1, Math.ceil(top / 5));
  for (let v = 0; v <= top; v += step) {
    ticks.push(s("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }),
      s("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, v));
  }
  return { x, y, ticks };
}

function dailyChart(account, period, report, usage) {
  const days = report.days;
  const width = 1000, height = 280, pad = { left: 36, right: 12, top: 22, bottom: 28 };
  const top = Math.max(1, ...days.map((d) => Math.max(d.peak_usage || 0, d.licenses + d.overage_allowance))) + 1;
  const { x, y, ticks } = frame(width, height, pad, days.length, top);
  const bars = days.map((d, k) => {
    if (d.peak_usage === null) {
      return s("rect", { class: "unknown", x: x(k), y: pad.top, width: x(k + 1) - x(k), height: y(0) - pad.top });
    }
    const kind = d.peak_usage > d.licenses + d.overage_allowance ? " over-allow" : d.peak_usage > d.licenses ? " over" : "";
    const open = () => go(account, period, d.date);
    return s("rect", {
      class: `bar-day${kind}`, "data-date": d.date, tabindex: 0, role: "button",
      "aria-label": `${d.date}: peak ${d.peak_usage} of ${d.licenses} licenses; show the day`,
      x: x(k) + 1, width: Math.max(1, x(k + 1) - x(k) - 2), y: y(d.peak_usage), height: y(0) - y(d.peak_usage),
      onclick: open, onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } },
    }, s("title", {}, `${d.date}: peak ${d.peak_usage}`));
  });
  const labels = days.map((d, k) => (k % Math.ceil(days.length / 10) === 0)
    ? s("text", { x: x(k), y: height - 8 }, d.date.slice(5)) : null);
  const parts = [...ticks, ...bars, ...labels,
    s("path", { class: "licenses-line", d: stepPath(days.map((d) => d.licenses), x, y) }),
    s("path", { class: "allowance-line", d: stepPath(days.map((d) => d.licenses + d.overage_allowance), x, y) })];
  const partial = days.findIndex((d) => !d.complete);
  if (partial >= 0 && usage.data_through) {
    const at = x(partial + (days[partial].peak_usage === null ? 0 : hoursOfDay(usage.data_through_local) / 24));
    parts.push(s("line", { class: "through-line", x1: at, x2: at, y1: pad.top - 6, y2: y(0) }),
      s("text", { class: "through-label", x: at + 4, y: pad.top - 8 }, "data through"));
  }
  return s("svg", { class: "chart", id: "period-chart", viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": `Daily peak usage from ${report.from} to ${report.to} against licenses and licenses plus allowance` },
  ...parts);
}

async function showDay(account, period, report, usage, date) {
  const section = document.getElementById("day-section");
  const zone = usage.plan.timezone;
  for (const bar of document.querySelectorAll(".bar-day")) bar.classList.toggle("selected", bar.dataset.date === date);
  const select = h("select", { id: "day-select", onchange: (e) => go(account, period, e.target.value) },
    report.days.filter((d) => d.peak_usage !== null).map((d) =>
      h("option", { value: d.date, selected: d.date === date }, `${d.date} (peak ${d.peak_usage})`)));
  section.replaceChildren(h("h2", { id: "day-title" }, `Day ${date}`),
    h("div", { class: "toolbar" }, h("label", { for: "day-select" }, "Day"), select),
    h("p", { class: "muted" }, "Loading the day…"));
  const minutes = await getJson(`${accountApi(account)}/days/${enc(date)}/minutes`);
  const day = report.days.find((d) => d.date === date);
  let who = null;
  if (day && day.peak_at) who = await getJson(`${accountApi(account)}/users?at=${enc(day.peak_at)}`);
  section.replaceChildren(h("h2", { id: "day-title" }, `Day ${date}`),
    h("div", { class: "toolbar" }, h("label", { for: "day-select" }, "Day"), select),
    h("p", {}, "Peak ", h("strong", { id: "day-peak" }, day ? day.peak_usage : "–"),
      day && day.peak_at ? ` at ${localTime(day.peak_at, zone, false)}` : "",
      day ? ` · ${num(day.license_hours, 1)} license hours · ${day.distinct_users} users` : ""),
    minuteChart(minutes, zone),
    h("h3", {}, "Counted at the day's peak"),
    who ? userList(who.users, "day-peak-users") : h("p", { class: "muted" }, "No one was counted that day."));
}

function minuteChart(minutes, zone) {
  const width = 600, height = 240, pad = { left: 36, right: 10, top: 22, bottom: 26 };
  const n = minutes.minutes, known = minutes.max_usage.length;
  const limits = minutes.licenses.map((l, k) => l + minutes.overage_allowance[k]);
  const top = Math.max(1, ...minutes.max_usage, ...limits) + 1;
  const { x, y, ticks } = frame(width, height, pad, n, top);
  const parts = [...ticks];
  if (known < n) parts.push(s("rect", { class: "unknown", x: x(known), y: pad.top, width: x(n) - x(known),
    height: y(0) - pad.top }));
  if (known) {
    parts.push(s("path", { class: "usage-line", d: `${stepPath(minutes.max_usage, x, y)}L${x(known)},${y(0)}L${x(0)},${y(0)}Z` }),
      s("path", { class: "licenses-line", d: stepPath(minutes.licenses, x, y) }),
      s("path", { class: "allowance-line", d: stepPath(limits, x, y) }));
  }
  const start = Date.parse(minutes.start);
  for (let k = 0; k <= n; k += 180) {
    parts.push(s("text", { x: x(k), y: height - 8, "text-anchor": k === 0 ? "start" : k + 180 > n ? "end" : "middle" },
      localTime(new Date(start + k * 60000).toISOString(), zone, false)));
  }
  if (known < n && minutes.data_through) {
    parts.push(s("line", { class: "through-line", x1: x(known), x2: x(known), y1: pad.top - 6, y2: y(0) }),
      s("text", { class: "through-label", x: x(known) + 4, y: pad.top - 8 }, "data through"));
  }
  const peak = Math.max(0, ...minutes.max_usage);
  return s("svg", { class: "chart", id: "day-chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Usage of ${minutes.date} by minute (${zone}): peak ${peak}` }, ...parts);
}

function deadLetters(data) {
  if (data.unavailable) {
    return h("section", { "aria-labelledby": "letters-title" }, h("h2", { id: "letters-title" }, "Dead letters"),
      h("p", { class: "muted", id: "letters-count" }, data.unavailable));
  }
  const section = h("section", { "aria-labelledby": "letters-title" },
    h("h2", { id: "letters-title" }, "Dead letters"),
    h("p", { class: "muted", id: "letters-count" }, data.total === 0 ? "None: every record of this account was applied."
      : `${data.total} in all; the last ${data.letters.length}, oldest first.`));
  if (!data.letters.length) return section;
  section.append(h("div", { class: "table-wrap" }, h("table", { id: "letters-table", class: "letters" },
    h("thead", {}, h("tr", {}, ["Reason", "Partition / offset", "Record time (UTC)", "Original record"].map((t) =>
      h("th", { scope: "col" }, t)))),
    h("tbody", {}, data.letters.map((l) => h("tr", {},
      h("td", { class: "reason" }, h("strong", {}, l.reason), h("small", { title: l.detail }, l.detail)),
      h("td", { class: "num" }, `${l.source_partition ?? "–"} / ${l.source_offset ?? "–"}`),
      h("td", { class: "nowrap" }, l.kafka_ts ? l.kafka_ts.replace("T", " ").replace("Z", "") : "–"),
      h("td", { class: "original" }, h("code", { title: l.original }, l.original))))))));
  return section;
}

// -- router ---------------------------------------------------------------------------------------------------------

async function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const match = /^\/accounts\/([^/]+)$/.exec(path);
  view.dataset.ready = "false";
  showTokenControl();
  try {
    if (match) {
      const account = decodeURIComponent(match[1]);
      const period = params.get("period") === "previous" ? "previous" : "current";
      const shown = state.page;
      if (shown && shown.account === account && shown.period === period && params.get("day")
          && document.getElementById("day-section")) {
        await showDay(account, period, shown.report, shown.usage, params.get("day"));
        document.getElementById("day-select").focus();
        return;
      }
      await showAccount(account, params);
    } else {
      state.page = null;
      await showAccounts();
    }
    view.focus({ preventScroll: true });
  } catch (error) {
    if (error.status === 401) askToken(error);
    else showError(error);
  } finally {
    view.dataset.ready = "true";
  }
}

window.addEventListener("hashchange", route);
route();
