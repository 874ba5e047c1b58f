/* Usage dashboards: fetch the JSON endpoints and draw with the vendored Chart.js.
 *
 * Every <canvas data-chart="KIND" data-src="URL"> is drawn once its JSON arrives. Afterwards the
 * canvas carries data-state="drawn" (or "empty" / "error") and data-points="N", the number of
 * data points drawn (all datasets together), so a browser test can tell a chart really drew.
 */
(function () {
  "use strict";

  var COLORS = {
    input: "#2563eb",
    output: "#c2410c",
    cacheWrite: "#a855f7",
    cacheRead: "#16a34a",
    cost: "#c2410c",
    uncached: "#98a2b3",
    requests: "#2563eb",
    errors: "#b42318",
    latency: "#1d2330",
    saved: "#16a34a"
  };
  var pending = {};

  function fetchJson(url) {
    if (!pending[url]) {
      pending[url] = fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) {
            return response.json().then(
              function (body) {
                // the JSON API's error shape: {"error": {"type", "message"}}
                var error = body && body.error;
                throw new Error((error && error.message) || response.statusText);
              },
              function () { throw new Error(response.status + " " + response.statusText); }
            );
          }
          return response.json();
        });
    }
    return pending[url];
  }

  function usd(value) { return parseFloat(value || "0"); }

  function dataset(label, data, color, extra) {
    var d = { label: label, data: data, backgroundColor: color, borderColor: color };
    for (var key in extra || {}) { d[key] = extra[key]; }
    return d;
  }

  function bar(labels, datasets, stacked, options) {
    var scales = { x: { stacked: !!stacked }, y: { stacked: !!stacked, beginAtZero: true } };
    return {
      type: "bar",
      data: { labels: labels, datasets: datasets },
      options: Object.assign({ responsive: true, maintainAspectRatio: false, animation: false, scales: scales }, options || {})
    };
  }

  function days(body) { return body.days.map(function (d) { return d.day; }); }

  var BUILDERS = {
    "daily-tokens": function (body) {
      var d = body.days;
      return bar(days(body), [
        dataset("Input", d.map(function (x) { return x.input_tokens; }), COLORS.input),
        dataset("Output", d.map(function (x) { return x.output_tokens; }), COLORS.output),
        dataset("Cache write", d.map(function (x) { return x.cache_write_tokens; }), COLORS.cacheWrite),
        dataset("Cache read", d.map(function (x) { return x.cache_read_tokens; }), COLORS.cacheRead)
      ], true);
    },
    "daily-cost": function (body) {
      var d = body.days;
      return {
        type: "line",
        data: {
          labels: days(body),
          datasets: [
            dataset("Cost (USD)", d.map(function (x) { return usd(x.cost_usd); }), COLORS.cost, { tension: 0.2 }),
            dataset("Without caching (USD)", d.map(function (x) { return usd(x.uncached_cost_usd); }), COLORS.uncached, { borderDash: [4, 4], tension: 0.2 })
          ]
        },
        options: { responsive: true, maintainAspectRatio: false, animation: false, scales: { y: { beginAtZero: true } } }
      };
    },
    "daily-requests": function (body) {
      var d = body.days;
      return bar(days(body), [
        dataset("Requests", d.map(function (x) { return x.requests; }), COLORS.requests),
        dataset("Errors", d.map(function (x) { return x.errors; }), COLORS.errors)
      ], false);
    },
    "daily-cache": function (body) {
      var d = body.days;
      return bar(days(body), [
        dataset("Read from cache", d.map(function (x) { return x.cache_read_tokens; }), COLORS.cacheRead),
        dataset("Written to cache", d.map(function (x) { return x.cache_write_tokens; }), COLORS.cacheWrite),
        dataset("Uncached input", d.map(function (x) { return x.input_tokens; }), COLORS.input)
      ], true);
    },
    "daily-saved": function (body) {
      return bar(days(body), [
        dataset("Saved (USD)", body.days.map(function (x) { return usd(x.saved_usd); }), COLORS.saved)
      ], false);
    },
    "session-calls": function (body) {
      var c = body.calls;
      // A session spanning days labels each call with its date, one within a day with seconds.
      var oneDay = c.length > 0 && c[0].occurred_at.slice(0, 10) === c[c.length - 1].occurred_at.slice(0, 10);
      var labels = c.map(function (x) {
        return oneDay ? x.occurred_at.slice(11, 19) : x.occurred_at.slice(5, 10) + " " + x.occurred_at.slice(11, 16);
      });
      var config = bar(labels, [
        dataset("Input", c.map(function (x) { return x.input_tokens; }), COLORS.input, { yAxisID: "y" }),
        dataset("Cache write", c.map(function (x) { return x.cache_write_tokens; }), COLORS.cacheWrite, { yAxisID: "y" }),
        dataset("Cache read", c.map(function (x) { return x.cache_read_tokens; }), COLORS.cacheRead, { yAxisID: "y" }),
        dataset("Output", c.map(function (x) { return x.output_tokens; }), COLORS.output, { yAxisID: "y" }),
        dataset("Latency (ms)", c.map(function (x) { return x.latency_ms; }), COLORS.latency, { type: "line", yAxisID: "latency", stack: "latency" })
      ], true);
      config.options.scales.latency = { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } };
      return config;
    },
    "users-cost": function (body) {
      var u = body.users.slice(0, 20);
      return bar(u.map(function (x) { return x.username; }), [
        dataset("Cost (USD)", u.map(function (x) { return usd(x.cost_usd); }), COLORS.cost),
        dataset("Saved (USD)", u.map(function (x) { return usd(x.saved_usd); }), COLORS.saved)
      ], false, { indexAxis: "y" });
    },
    "orgs-cost": function (body) {
      var o = body.organizations;
      return bar(o.map(function (x) { return x.name; }), [
        dataset("Cost (USD)", o.map(function (x) { return usd(x.cost_usd); }), COLORS.cost),
        dataset("Saved (USD)", o.map(function (x) { return usd(x.saved_usd); }), COLORS.saved)
      ], false);
    }
  };

  function countPoints(config) {
    return config.data.datasets.reduce(function (n, d) { return n + d.data.length; }, 0);
  }

  function draw(canvas) {
    var kind = canvas.getAttribute("data-chart");
    var build = BUILDERS[kind];
    if (!build) {
      canvas.setAttribute("data-state", "error");
      canvas.setAttribute("data-error", "unknown chart kind " + kind);
      return;
    }
    canvas.setAttribute("data-state", "loading");
    fetchJson(canvas.getAttribute("data-src")).then(function (body) {
      var config = build(body);
      new window.Chart(canvas, config);
      var points = countPoints(config);
      canvas.setAttribute("data-points", String(points));
      canvas.setAttribute("data-state", points ? "drawn" : "empty");
    }).catch(function (error) {
      canvas.setAttribute("data-state", "error");
      canvas.setAttribute("data-error", String(error.message || error));
      var note = document.createElement("p");
      note.className = "error";
      note.textContent = "Could not load chart data: " + (error.message || error);
      canvas.parentNode.appendChild(note);
    });
  }

  function start() {
    if (!window.Chart) { return; }
    var canvases = document.querySelectorAll("canvas[data-chart]");
    for (var i = 0; i < canvases.length; i++) { draw(canvases[i]); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
