/* The staff queue page, live: poll its JSON every 2 s and rebuild the stats and tables in place.
 *
 * The page is complete without this script (the server renders the same rows); this keeps it
 * current without a reload. Every text from the server goes in through textContent, never
 * innerHTML: user names are user input.
 *
 * For tests and people: #staff-queue carries data-state ("live", "stale" when the last fetch
 * failed, "unavailable" when the server answered 503, "refused" on 401/403) and
 * data-refreshes (successful updates so far); #live-updated says "updated HH:MM:SS".
 */
(function () {
  "use strict";

  var root = document.getElementById("staff-queue");
  if (!root) return;
  var INTERVAL_MS = 2000;
  var notice = document.getElementById("live-notice");
  var updated = document.getElementById("live-updated");
  var mode = document.getElementById("live-mode");
  var lastGood = null; // Date of the last successful update
  var refreshes = 0;
  var timer = null;
  var busy = false; // a fetch is under way

  function time(date) {
    return window.gatewayWhen(date, true);
  }

  // As the server's `num` filter prints them: 1234567 -> 1,234,567.
  function num(value) {
    return Number(value || 0).toLocaleString("en-US", { maximumFractionDigits: 1 });
  }

  function text(value) {
    return value === null || value === undefined || value === "" ? "–" : String(value);
  }

  function cell(value, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text(value);
    return td;
  }

  function muted(value) {
    var span = document.createElement("span");
    span.className = "muted";
    span.textContent = value;
    return span;
  }

  function requestLink(id) {
    var a = document.createElement("a");
    a.href = "/queue/requests/" + encodeURIComponent(id) + "/";
    a.textContent = String(id);
    return a;
  }

  function emptyRow(columns, message) {
    var tr = document.createElement("tr");
    tr.className = "empty";
    var td = cell(message, "muted");
    td.colSpan = columns;
    tr.appendChild(td);
    return tr;
  }

  function fill(id, rows, columns, message, build) {
    var body = document.getElementById(id);
    if (!body) return;
    var built = rows.map(build);
    if (built.length === 0) built.push(emptyRow(columns, message));
    body.replaceChildren.apply(body, built);
  }

  function setText(id, value) {
    var el = document.getElementById(id);
    if (el) el.textContent = value;
  }

  function renderStats(data) {
    var counts = data.counts || {};
    setText("stat-queued", num(counts.queued));
    setText("stat-inflight", num(data.in_flight));
    setText("stat-succeeded", num(counts.succeeded));
    setText("stat-failed", num(counts.failed));
    setText("stat-rejected", num(counts.rejected));
  }

  function renderClasses(data) {
    fill("classes-body", data.classes || [], 4, "No classes configured.", function (row) {
      var tr = document.createElement("tr");
      tr.dataset.class = row.name;
      var name = cell(row.name);
      if (row.batch) name.append(" ", muted("(Message Batches: not in this queue)"));
      tr.append(name, cell(Math.round(row.min_share * 100) + "%", "num"),
        cell(num(row.requests), "num requests"), cell(num(row.tokens), "num tokens"));
      return tr;
    });
  }

  function renderHeads(data) {
    fill("heads-body", data.heads || [], 9, "Nothing queued.", function (row) {
      var tr = document.createElement("tr");
      tr.dataset.requestId = row.request_id;
      tr.dataset.class = row.priority;
      var link = document.createElement("td");
      link.appendChild(requestLink(row.request_id));
      tr.append(cell(row.priority), cell(row.class_position, "num class-position"),
        cell(row.position, "num position"), link, cell(row.user, "user"), cell(row.model),
        cell(num(row.tokens), "num"), cell(row.eta, "eta"), cell(row.waited, "waited"));
      return tr;
    });
  }

  function renderUsers(data) {
    var users = data.users || [];
    var caps = data.row_caps || {};
    setText("users-note", users.length + " of " + (data.users_total || 0) +
      " users with queued requests, most queued tokens first; next request, position and wait for the first " +
      (caps.user_detail_rows || 0) + ".");
    fill("users-body", users, 8, "Queue empty.", function (row) {
      var tr = document.createElement("tr");
      tr.dataset.userKey = row.user_key;
      tr.append(cell(row.user, "user"), cell(num(row.requests), "num requests"), cell(num(row.tokens), "num tokens"));
      var next = row.next;
      if (next) {
        var link = document.createElement("td");
        link.append(requestLink(next.request_id), " ", muted(next.priority));
        tr.append(link, cell(next.position, "num position"), cell(next.class_position, "num class-position"),
          cell(next.eta, "eta"), cell(next.waited, "waited"));
      } else {
        tr.append(cell(null, "muted"), cell(null, "num position"), cell(null, "num class-position"),
          cell(null, "eta"), cell(null, "waited"));
      }
      return tr;
    });
  }

  function renderInFlight(data) {
    var calls = data.in_flight_calls || [];
    setText("in-flight-note", calls.length + " of " + (data.in_flight || 0) + " dispatched or running, longest first.");
    fill("in-flight-body", calls, 7, "Nothing in flight.", function (row) {
      var tr = document.createElement("tr");
      tr.dataset.requestId = row.request_id;
      var link = document.createElement("td");
      link.appendChild(requestLink(row.request_id));
      var priority = cell(row.priority);
      if (row.batch) priority.append(" ", muted("(batch)"));
      tr.append(link, cell(row.user, "user"), cell(row.model), priority, cell(row.status, "status"),
        cell(row.since, "since"), cell(row.attempts, "num"));
      return tr;
    });
  }

  function bucketCell(bucket) {
    var td = document.createElement("td");
    td.className = "bucket";
    td.dataset.dimension = bucket.dimension;
    if (bucket.unlimited) {
      td.textContent = "unlimited";
      return td;
    }
    var meter = document.createElement("meter");
    meter.min = 0;
    meter.max = 100;
    meter.value = bucket.available_pct;
    td.append(meter, " " + bucket.available_pct + "% ", muted(bucket.text));
    return td;
  }

  function renderLimiter(data) {
    var body = document.getElementById("limiter-body");
    if (!body) return;
    var rows = [];
    (data.limiter || []).forEach(function (row) {
      if (row.idle) return;
      var tr = document.createElement("tr");
      tr.dataset.modelClass = row.model_class;
      var name = cell(row.model_class, "model-class");
      name.rowSpan = 2;
      tr.appendChild(name);
      (row.buckets || []).forEach(function (bucket) { tr.appendChild(bucketCell(bucket)); });
      tr.append(cell(Number(row.paused_s || 0).toFixed(1) + " s", "num"), cell(num(row.rate_limited), "num"));
      var explain = document.createElement("tr");
      explain.className = "explain";
      explain.dataset.modelClass = row.model_class;
      var words = cell((row.explanation || []).join(" "), "muted");
      words.colSpan = 5;
      explain.appendChild(words);
      rows.push(tr, explain);
    });
    var idle = data.limiter_idle || [];
    if (idle.length) {
      var tr = document.createElement("tr");
      tr.className = "idle";
      var td = cell("Untouched (full buckets, nothing learned, no 429s): " + idle.join(", ") + ".", "muted");
      td.colSpan = 6;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren.apply(body, rows);
  }

  function render(data) {
    renderStats(data);
    renderClasses(data);
    renderHeads(data);
    renderUsers(data);
    renderInFlight(data);
    renderLimiter(data);
  }

  function showUpdated(date) {
    updated.replaceChildren("updated ");
    var t = document.createElement("time");
    t.id = "live-updated-at";
    t.dateTime = date.toISOString();
    t.textContent = time(date);
    updated.appendChild(t);
  }

  function setState(state, message) {
    root.dataset.state = state;
    if (message) {
      notice.textContent = message;
      notice.hidden = false;
    } else {
      notice.textContent = "";
      notice.hidden = true;
    }
  }

  function since() {
    return lastGood ? " Showing figures from " + time(lastGood) + "." : "";
  }

  function errorMessage(body, fallback) {
    return body && body.error && body.error.message ? body.error.message : fallback;
  }

  function handle(answer) {
    if (answer.network) {
      setState("stale", "Stale: the server could not be reached." + since() + " Trying again every 2 s.");
      return;
    }
    var status = answer.response.status;
    if (answer.response.ok && answer.body) {
      render(answer.body);
      lastGood = new Date(answer.body.generated_at || Date.now());
      refreshes += 1;
      root.dataset.refreshes = String(refreshes);
      showUpdated(lastGood);
      setState("live", null);
    } else if (status === 503) {
      setState("unavailable", "Queue unavailable: " + errorMessage(answer.body, "the server answered 503") +
        "." + since() + " Trying again every 2 s.");
    } else if (status === 401 || status === 403) {
      setState("refused", "Not updating: " + errorMessage(answer.body, "not signed in as staff") +
        ". Reload the page to sign in again." + since());
    } else {
      setState("stale", "Stale: the server answered " + status + "." + since() + " Trying again every 2 s.");
    }
  }

  function refresh() {
    timer = null;
    if (busy) return;
    busy = true;
    fetch(root.dataset.src, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(
        function (response) {
          return response.json().then(
            function (body) { return { response: response, body: body }; },
            function () { return { response: response, body: null }; }
          );
        },
        function () { return { network: true }; }
      )
      .then(handle)
      .catch(function (error) {
        // A bug of this script, not the network: say the page is stale, and let it surface.
        setState("stale", "Stale: this page could not show the latest figures." + since());
        setTimeout(function () { throw error; });
      })
      .then(function () {
        busy = false;
        schedule();
      });
  }

  function schedule() {
    // One fetch at a time, the next 2 s after the last one ended; none while the tab is hidden.
    if (timer === null && !busy && !document.hidden) timer = setTimeout(refresh, INTERVAL_MS);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    } else if (timer === null && !busy) {
      refresh();
    }
  });

  var rendered = document.getElementById("live-updated-at");
  if (rendered) {
    lastGood = new Date(rendered.dateTime);
    showUpdated(lastGood);
  }
  if (mode) mode.textContent = "· updates every 2 s";
  root.dataset.refreshes = "0";
  schedule();
})();
