// The reviewer console's script: the live queue (Server-Sent Events), decisions, the edit
// form and the keyboard. Agent-supplied text only ever goes into the page as textContent.
"use strict";

(function () {
  const PREFIX = "/inbox";
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.getAttribute("content") : null;
  const $ = (id) => document.getElementById(id);
  const article = document.querySelector("article.change");
  const openId = article ? article.dataset.id : null;
  let openStatus = article ? article.dataset.status : null;

  // -- the queue ------------------------------------------------------------------------
  const queue = $("queue");

  function itemFor(change) {
    const li = document.createElement("li");
    li.className = "queue-item";
    li.dataset.id = change.id;
    if (change.id === openId) li.setAttribute("aria-current", "true");
    const a = document.createElement("a");
    a.href = PREFIX + "/changes/" + encodeURIComponent(change.id);
    a.textContent = change.summary;
    const metaLine = document.createElement("span");
    metaLine.className = "meta";
    const agent = (change.proposedBy && change.proposedBy.keyName) || "agent";
    metaLine.textContent = change.toolName + " · " + agent;
    li.append(a, metaLine);
    return li;
  }

  function counted() {
    if (!queue) return;
    const n = queue.children.length;
    $("queue-count").textContent = String(n);
    $("queue-empty").hidden = n > 0;
  }

  function findItem(id) {
    if (!queue) return null;
    for (const li of queue.children) if (li.dataset.id === id) return li;
    return null;
  }

  function resync(pending) {
    if (!queue) return;
    queue.replaceChildren(...pending.map(itemFor));
    counted();
  }

  function added(change) {
    if (!queue || findItem(change.id)) return;
    queue.prepend(itemFor(change));
    counted();
  }

  function removed(id) {
    const li = findItem(id);
    if (li) {
      li.remove();
      counted();
    }
  }

  // -- the open change ------------------------------------------------------------------
  const say = (text) => { const o = $("outcome"); if (o) o.textContent = text; };

  function disableActions() {
    for (const id of ["approve", "edit", "reject", "reason", "save-approve"]) {
      const el = $(id);
      if (el) el.disabled = true;
    }
    const form = $("edit-form");
    if (form) form.hidden = true;
    for (const el of document.querySelectorAll("#edit-form input, #edit-form select, #edit-form textarea")) {
      el.disabled = true;
    }
  }

  function decidedBy(event) {
    return event.approvedBy || event.rejectedBy || event.decidedBy || null;
  }

  function showDecided(status, by, elsewhere) {
    openStatus = status;
    if (article) article.dataset.status = status;
    const line = $("change-status");
    if (line) {
      line.textContent = status + (by ? " by " + by : "") + (elsewhere ? " (decided elsewhere)" : "");
      line.className = "status status-" + status.toLowerCase();
    }
    const countdown = document.querySelector(".countdown");
    if (countdown) countdown.textContent = status === "Expired" ? "expired" : "decided";
    disableActions();
    rerenderOpen();
  }

  // After a decision the server's rendering of the change is the truth: its heading and
  // diff (an edited approval applies other arguments than the agent proposed), the
  // decided facts, the execution result and the audit trail. The status line, the outcome
  // message and the (disabled) actions stay as they are.
  const DECIDED_PARTS = ["h2", "dl.facts", 'section[aria-labelledby="diff-title"]', "section.audit"];

  async function rerenderOpen() {
    if (!article) return;
    let r;
    try {
      r = await fetch(PREFIX + "/changes/" + encodeURIComponent(openId),
        { headers: { Accept: "text/html" }, credentials: "same-origin" });
    } catch (_) { return; } // offline: what is shown stays until the next visit
    if (!r.ok) return;
    const fresh = new DOMParser().parseFromString(await r.text(), "text/html")
      .querySelector("article.change");
    if (!fresh || fresh.dataset.id !== openId || fresh.dataset.status === "Pending") return;
    for (const selector of DECIDED_PARTS) {
      const now = article.querySelector(selector);
      const then = fresh.querySelector(selector);
      if (now && then) now.replaceWith(document.importNode(then, true));
    }
  }

  async function refreshOpen() {
    if (!openId || openStatus !== "Pending") return;
    const r = await fetch(PREFIX + "/api/changes/" + encodeURIComponent(openId),
      { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!r.ok) return;
    const change = await r.json();
    if (change.status !== "Pending") {
      showDecided(change.status, change.decidedBy, true);
      say("This change was " + change.status.toLowerCase() + " elsewhere while you were offline.");
    }
  }

  // -- live: Server-Sent Events ---------------------------------------------------------
  const live = $("live");
  let source = null;
  let retryMs = 1000;

  function setLive(state, text) {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  }

  function connect() {
    if (!csrf) return; // not signed in: nothing to watch
    source = new EventSource(PREFIX + "/api/events");
    source.addEventListener("snapshot", (e) => {
      retryMs = 1000;
      setLive("online", "Live");
      const data = JSON.parse(e.data);
      resync(data.pending);
      if (openId && openStatus === "Pending" && !data.pending.some((c) => c.id === openId)) {
        refreshOpen();
      }
    });
    source.addEventListener("PendingChangeCreated", (e) => added(JSON.parse(e.data)));
    for (const name of ["PendingChangeApproved", "PendingChangeRejected", "PendingChangeExpired"]) {
      source.addEventListener(name, (e) => {
        const event = JSON.parse(e.data);
        removed(event.pendingChangeId);
        if (event.pendingChangeId === openId && openStatus === "Pending") {
          showDecided(event.status, decidedBy(event), true);
          say("This change was " + event.status.toLowerCase() + " elsewhere" +
              (decidedBy(event) ? " by " + decidedBy(event) : "") + "; nothing more to do here.");
        }
      });
    }
    source.addEventListener("signedOut", () => {
      source.close();
      setLive("offline", "Signed out");
    });
    source.onerror = () => {
      setLive("offline", "Offline — reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        // Refused (not an event stream): try again ourselves, backing off.
        setTimeout(async () => {
          try {
            const r = await fetch(PREFIX + "/api/session", { credentials: "same-origin" });
            if (r.status === 401) { setLive("offline", "Signed out"); return; }
          } catch (_) { /* still offline */ }
          connect();
        }, retryMs);
        retryMs = Math.min(retryMs * 2, 15000);
      }
    };
  }

  // -- decisions ------------------------------------------------------------------------
  async function post(path, body) {
    const r = await fetch(PREFIX + "/api/changes/" + encodeURIComponent(openId) + "/" + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    return { status: r.status, data };
  }

  function explain(result) {
    if (result.status === 409) {
      showDecided(result.data.currentStatus, null, true);
      return result.data.message;
    }
    if (result.status === 401) return "Your session ended: sign in again with a new link.";
    if (result.status === 403) return "Refused: " + (result.data.message || "forbidden") + ".";
    if (result.status === 404) return "This change no longer exists in your tenant.";
    return result.data.message || "Something went wrong (HTTP " + result.status + ").";
  }

  function approvedText(change) {
    const r = change.executionResult || {};
    if (r.success) return "Approved" + (change.edited ? " with your edits" : "") +
      " and executed" + (r.entityId ? " (" + r.entityId + ")" : "") + ".";
    return "Approved, but execution failed: " + (r.error || "unknown error") + ".";
  }

  async function approve(args) {
    const result = await post("approve", args === undefined ? {} : { arguments: args });
    if (result.status === 200) {
      showDecided("Approved", result.data.decidedBy, false);
      removed(openId);
      say(approvedText(result.data));
      return null;
    }
    if (result.status === 400 && result.data.fields) return result.data.fields;
    say(explain(result));
    return null;
  }

  async function reject() {
    const reason = $("reason");
    const error = $("reason-error");
    if (!reason.value.trim()) {
      error.textContent = "A reason is required to reject.";
      reason.setAttribute("aria-invalid", "true");
      reason.focus();
      return;
    }
    error.textContent = "";
    reason.removeAttribute("aria-invalid");
    const result = await post("reject", { reason: reason.value });
    if (result.status === 200) {
      showDecided("Rejected", result.data.decidedBy, false);
      removed(openId);
      say("Rejected. The agent has been told why.");
    } else {
      say(explain(result));
    }
  }

  // -- the edit form --------------------------------------------------------------------
  function formArguments(form) {
    const args = {};
    for (const el of form.querySelectorAll("[data-kind]")) {
      const raw = el.value;
      if (raw === "" || (el.dataset.kind !== "textarea" && raw.trim() === "")) {
        if (el.dataset.nullable === "true") args[el.name] = null;
        else if (el.dataset.required === "true") args[el.name] = raw;
        // else: omitted, the tool's default applies
        continue;
      }
      args[el.name] = el.dataset.kind === "number" ? Number(raw) : raw;
    }
    return args;
  }

  function showFieldErrors(form, fields) {
    for (const el of form.querySelectorAll("[data-kind]")) {
      const message = fields[el.name] || "";
      const slot = $("arg-err-" + el.name);
      if (slot) slot.textContent = message;
      if (message) el.setAttribute("aria-invalid", "true");
      else el.removeAttribute("aria-invalid");
    }
    const general = Object.keys(fields).filter((k) => !form.querySelector('[name="' + CSS.escape(k) + '"]'));
    const first = form.querySelector('[aria-invalid="true"]');
    if (first) first.focus();
    say("Fix the highlighted fields; nothing was approved." +
        (general.length ? " " + general.map((k) => (k || "arguments") + ": " + fields[k]).join("; ") : ""));
  }

  function openEdit() {
    const form = $("edit-form");
    const button = $("edit");
    if (!form || button.disabled) return;
    form.hidden = false;
    button.setAttribute("aria-expanded", "true");
    const first = form.querySelector("[data-kind]");
    if (first) first.focus();
  }

  // -- countdown ------------------------------------------------------------------------
  function tick() {
    const el = document.querySelector(".countdown");
    if (!el || openStatus !== "Pending") return;
    const left = Math.floor((Date.parse(el.dataset.expires) - Date.now()) / 1000);
    if (left <= 0) { el.textContent = "expiring now"; return; }
    const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    el.textContent = "in " + (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
  }

  // -- keyboard -------------------------------------------------------------------------
  function move(step) {
    if (!queue || !queue.children.length) return;
    const items = Array.from(queue.children);
    let i = items.findIndex((li) => li.getAttribute("aria-current") === "true");
    i = i < 0 ? (step > 0 ? 0 : items.length - 1) : i + step;
    if (i < 0 || i >= items.length) return;
    window.location.assign(items[i].querySelector("a").href);
  }

  function toggleHelp(show) {
    const help = $("help");
    help.hidden = show === undefined ? !help.hidden : !show;
    if (!help.hidden) $("help-close").focus();
  }

  // An open edit form with a field changed: "a" would approve the proposal as it was
  // and drop the edit, so it says so and offers the form's button instead.
  function unsavedEdit() {
    const form = $("edit-form");
    if (!form || form.hidden) return false;
    return Array.from(form.querySelectorAll("input, textarea")).some((el) => el.value !== el.defaultValue) ||
      Array.from(form.querySelectorAll("select")).some((el) =>
        Array.from(el.options).some((o) => o.selected !== o.defaultSelected));
  }

  function approveKey() {
    const b = $("approve");
    if (!b || b.disabled) return;
    if (unsavedEdit()) {
      say("Your edit is not saved: Save and approve applies it; the Approve button approves " +
          "the proposal as it was.");
      $("save-approve").focus();
      return;
    }
    b.click();
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "Escape") { toggleHelp(false); return; }
    const t = e.target;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
    const actions = {
      j: () => move(1),
      k: () => move(-1),
      a: () => approveKey(),
      r: () => { const r = $("reason"); if (r && !r.disabled) r.focus(); },
      e: () => openEdit(),
      "?": () => toggleHelp(),
    };
    const action = actions[e.key];
    if (action) { e.preventDefault(); action(); }
  }

  // -- wiring ---------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    document.addEventListener("keydown", onKey);
    const helpOpen = $("help-open");
    if (helpOpen) helpOpen.addEventListener("click", () => toggleHelp(true));
    $("help-close").addEventListener("click", () => toggleHelp(false));
    if (article) {
      $("approve").addEventListener("click", () => approve(undefined));
      $("reject").addEventListener("click", reject);
      $("edit").addEventListener("click", openEdit);
      const form = $("edit-form");
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const fields = await approve(formArguments(form));
        if (fields) showFieldErrors(form, fields);
      });
      tick();
      setInterval(tick, 1000);
    }
    connect();
  });
})();
