// Hotline operators' web view: the overdue table and the live escalation feed.
// Read-only. Every string from the relay is untrusted and goes in with textContent only.
"use strict";

(function () {
  const SEVERITIES = ["critical", "high", "medium", "low"];
  const FEED_MAX = 500;
  const REFRESH_MS = 30000;
  let refreshTimer = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function severityClass(sev) {
    return SEVERITIES.indexOf(sev) >= 0 ? "sev-" + sev : "sev-unknown";
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  // "2026-03-01 02:10:00 UTC (03:10:00 CET)": the relay's UTC time and the browser's zone.
  function when(iso) {
    const d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    const utc = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
    let local = "";
    try {
      local = d.toLocaleTimeString(undefined, { hour12: false, timeZoneName: "short" });
    } catch (e) { local = ""; }
    return local && local.indexOf("UTC") < 0 ? utc + " (" + local + ")" : utc;
  }

  function duration(ms) {
    const s = Math.max(0, Math.floor(Number(ms) / 1000));
    if (s >= 3600) return Math.floor(s / 3600) + "h" + pad(Math.floor(s % 3600 / 60)) + "m";
    return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
  }

  function kindLabel(record) {
    if (!record.exercise) return null;
    const status = record.status === "test" ? "test" : "exercise";
    return el("span", status.toUpperCase(), "label label-" + status);
  }

  function filters() {
    const desk = $("filter-desk").value.trim();
    const sev = [];
    document.querySelectorAll("input.filter-severity").forEach(function (box) {
      if (box.checked) sev.push(box.value);
    });
    return { desk: desk, severities: sev };
  }

  function visible(node, f) {
    const sevOk = f.severities.indexOf(node.dataset.severity) >= 0;
    const deskOk = !f.desk || node.dataset.sender === f.desk || node.dataset.recipient === f.desk;
    return sevOk && deskOk;
  }

  function applyFilters() {
    const f = filters();
    let shown = 0;
    document.querySelectorAll("#overdue tbody tr").forEach(function (row) {
      row.hidden = !visible(row, f);
      if (!row.hidden) shown += 1;
    });
    $("overdue-count").textContent = "(" + shown + ")";
    $("overdue-empty").hidden = shown !== 0;
    let feedShown = 0;
    document.querySelectorAll("#feed li").forEach(function (item) {
      item.hidden = !visible(item, f);
      if (!item.hidden) feedShown += 1;
    });
    $("feed-empty").hidden = feedShown !== 0;
  }

  function tag(node, record) {
    node.dataset.severity = String(record.severity);
    node.dataset.sender = String(record.sender);
    node.dataset.recipient = String(record.recipient);
    node.dataset.notice = String(record.notice_id);
  }

  function overdueRow(r) {
    const tr = el("tr", null, severityClass(r.severity));
    tag(tr, r);
    tr.appendChild(el("td", r.severity));
    tr.appendChild(el("td", String(r.notice_id).slice(0, 16), "mono"));
    tr.appendChild(el("td", r.sender));
    tr.appendChild(el("td", r.recipient));
    tr.appendChild(el("td", r.track === "ack" ? "ack" : "reply"));
    tr.appendChild(el("td", when(r.deadline)));
    tr.appendChild(el("td", duration(r.overdue_ms)));
    tr.appendChild(el("td", r.level));
    tr.appendChild(el("td", r.delivered ? "yes" : "NO", r.delivered ? "" : "notdelivered"));
    const kind = el("td");
    const label = kindLabel(r);
    kind.appendChild(label || el("span", "real"));
    tr.appendChild(kind);
    return tr;
  }

  function connection(state, text) {
    const c = $("conn");
    c.className = "conn conn-" + state;
    c.textContent = text;
  }

  async function loadOverdue() {
    let resp;
    try {
      resp = await fetch("/ops/api/overdue", { credentials: "same-origin", cache: "no-store" });
    } catch (e) {
      connection("down", "relay unreachable");
      return;
    }
    if (resp.status === 401) { connection("down", "session ended: mint a new link"); return; }
    if (!resp.ok) { connection("down", "relay answered " + resp.status); return; }
    const body = await resp.json();
    $("relay").textContent = body.relay;
    $("operator").textContent = body.operator;
    $("session-expires").textContent = when(body.session_expires);
    $("overdue-at").textContent = when(body.now);
    const tbody = document.querySelector("#overdue tbody");
    tbody.replaceChildren.apply(tbody, body.overdue.map(overdueRow));
    applyFilters();
  }

  function scheduleRefresh(ms) {
    if (refreshTimer !== null) clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () { refreshTimer = null; loadOverdue(); scheduleRefresh(REFRESH_MS); }, ms);
  }

  function feedItem(r) {
    const resolved = r.event === "escalation.resolved";
    const li = el("li", null, resolved ? "resolved" : severityClass(r.severity));
    tag(li, r);
    li.dataset.event = String(r.event);
    li.dataset.level = String(r.level);
    li.appendChild(el("span", when(r.at) + "  ", "at"));
    li.appendChild(el("strong", resolved ? "RESOLVED" : "ESCALATED"));
    let text = " " + r.severity + " " + String(r.notice_id).slice(0, 16) + " " + r.sender +
      " \u2192 " + r.recipient + " ";
    if (resolved) {
      text += (r.track === "ack" ? "acknowledged " : "answered ") + duration(r.overdue_ms) +
        " late (level " + r.level + ")";
    } else {
      text += "level " + r.level + (r.missed_levels ? ", " + r.missed_levels + " missed" : "") +
        (r.final ? " FINAL" : "") + ": no " + (r.track === "ack" ? "ack" : "reply") + " for " +
        duration(r.overdue_ms) + " past deadline, " + (r.delivered ? "delivered" : "NOT delivered");
    }
    li.appendChild(el("span", text));
    const label = kindLabel(r);
    if (label) li.appendChild(label);
    return li;
  }

  function follow() {
    const source = new EventSource("/ops/api/feed");
    source.onopen = function () { connection("live", "live"); };
    source.addEventListener("escalation", function (ev) {
      let record;
      try { record = JSON.parse(ev.data); } catch (e) { return; }
      const list = $("feed");
      list.insertBefore(feedItem(record), list.firstChild);
      while (list.children.length > FEED_MAX) list.removeChild(list.lastChild);
      applyFilters();
      scheduleRefresh(200);  // an escalation or resolution changes the overdue table
    });
    source.addEventListener("ended", function () {
      source.close();
      connection("down", "session ended: mint a new link");
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        connection("down", "disconnected: reload the page");
      } else {
        connection("wait", "reconnecting");
      }
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("filter-desk").addEventListener("input", applyFilters);
    document.querySelectorAll("input.filter-severity").forEach(function (box) {
      box.addEventListener("change", applyFilters);
    });
    loadOverdue();
    scheduleRefresh(REFRESH_MS);
    follow();
  });
})();
