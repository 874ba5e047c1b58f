// Live queue positions: refresh the pending table from the JSON API every 2 seconds.
(function () {
  const table = document.getElementById("pending-table");
  if (!table) return;
  const body = table.querySelector("tbody");
  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }
  // The page's own CSRF token (from the submit form) lets the rebuilt rows keep their Cancel button.
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]");
  function cancelCell(r) {
    const td = document.createElement("td");
    if (r.status !== "queued" || !csrf) return td;
    const form = document.createElement("form");
    form.method = "post";
    form.action = "/queue/requests/" + r.id + "/cancel/";
    const token = document.createElement("input");
    token.type = "hidden";
    token.name = "csrfmiddlewaretoken";
    token.value = csrf.value;
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Cancel";
    form.append(token, button);
    td.appendChild(form);
    return td;
  }
  // "about 3 min (2–4 min)" while queued; once dispatched, the wait it had.
  function etaCell(r) {
    const text = r.eta_text || (r.waited_text ? "waited " + r.waited_text : "–");
    const td = cell(text, "num eta");
    if (r.eta_s != null) td.title = r.eta_s.toFixed(1) + " s predicted";
    return td;
  }
  async function refresh() {
    try {
      const response = await fetch("/api/v1/requests?status=pending", { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      body.replaceChildren();
      if (data.requests.length === 0) {
        const tr = document.createElement("tr");
        tr.className = "empty";
        const td = cell("Nothing waiting.", "muted");
        td.colSpan = 9;
        tr.appendChild(td);
        body.appendChild(tr);
      }
      for (const r of data.requests) {
        const tr = document.createElement("tr");
        tr.dataset.id = r.id;
        const link = document.createElement("a");
        link.href = "/queue/requests/" + r.id + "/";
        link.textContent = r.id;
        const idCell = document.createElement("td");
        idCell.appendChild(link);
        tr.append(idCell, cell(r.session_id), cell(r.model), cell(r.priority), cell(r.status, "status"),
          cell(r.position == null ? "–" : r.position, "num position"),
          etaCell(r),
          cell(window.gatewayWhen(r.created_at, true)), cancelCell(r));
        body.appendChild(tr);
      }
      table.dataset.refreshedAt = Date.now();
    } catch (e) {
      /* the next tick tries again */
    }
  }
  setInterval(refresh, 2000);
})();
