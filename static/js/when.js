// How scripts print a moment, as the server's `when` filter does: "2026-12-06 14:05:09 EST",
// in the reader's zone (Settings; base.html puts it on <body data-time-zone>), not the
// browser's, so a row a script rebuilds reads like the server-rendered row it replaces.
// The abbreviation is the browser's (Intl): for some zones it says "GMT+1" where the server says "CET".
window.gatewayWhen = function (value, seconds) {
  var date = value instanceof Date ? value : new Date(value);
  if (isNaN(date.getTime())) return "";
  var options = {
    timeZone: document.body.dataset.timeZone || "UTC",
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short"
  };
  if (seconds) options.second = "2-digit";
  var parts = {};
  try {
    new Intl.DateTimeFormat("en-US", options).formatToParts(date).forEach(function (p) { parts[p.type] = p.value; });
  } catch (e) {
    return date.toISOString();  // a zone this browser does not know: still unambiguous
  }
  return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute +
    (seconds ? ":" + parts.second : "") + " " + parts.timeZoneName;
};
