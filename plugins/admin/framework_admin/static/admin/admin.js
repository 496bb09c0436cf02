/* framework admin: the dashboard's own script. No dependencies, nothing loaded from elsewhere.
 *
 * - asks before destructive form actions (forms with data-confirm);
 * - refreshes the page's numbers and tables from the JSON API while the page is open;
 * - draws the throughput chart as inline SVG from the per-minute counters.
 *
 * Task data (payloads, errors, names) only ever reaches the page through textContent and
 * setAttribute, never as markup.
 */
(function () {
  "use strict";

  var body = document.body;
  var D = body.dataset;
  var ADMIN = D.admin || "/admin";
  var API = D.api || "/api/admin";
  var CAN_ACT = D.canAct === "true";
  var REFRESH = parseInt(D.refresh || "0", 10);
  var CHART_HOURS = parseInt(D.chartHours || "1", 10);
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var CSRF = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var SVG_NS = "http://www.w3.org/2000/svg";
  var STATES = ["pending", "active", "scheduled", "retry", "archived", "completed"];

  // -- small DOM helpers (text only through text nodes) --------------------------------------

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, children) {
    var el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) el.setAttribute(k, String(attrs[k]));
    });
  }

  function append(el, children) {
    if (children === null || children === undefined || children === false) return;
    if (Array.isArray(children)) {
      children.forEach(function (c) { append(el, c); });
      return;
    }
    el.appendChild(typeof children === "object" ? children : document.createTextNode(String(children)));
  }

  function q(value) { return encodeURIComponent(value); }

  // A queue's page, or with an action its form action: the name travels as a query value (it may hold "/").
  function queueUrl(name, action) {
    return ADMIN + "/queue" + (action ? "/" + action : "") + "?queue=" + q(name);
  }

  function truncate(text, n) {
    text = text || "";
    return text.length > n ? text.slice(0, n - 1) + "\u2026" : text;
  }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function absolute(date) {
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  function relative(date) {
    var secs = Math.round((date.getTime() - Date.now()) / 1000);
    var abs = Math.abs(secs);
    var text;
    if (abs < 5) return "just now";
    if (abs < 90) text = abs + "s";
    else if (abs < 5400) text = Math.round(abs / 60) + "m";
    else if (abs < 172800) text = Math.round(abs / 3600) + "h";
    else text = Math.round(abs / 86400) + "d";
    return secs < 0 ? text + " ago" : "in " + text;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "\u2014";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 120) return seconds.toFixed(1) + " s";
    if (seconds < 7200) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function when(iso) {
    if (!iso) return h("span", {"class": "muted"}, "\u2014");
    var t = h("time", {datetime: iso}, iso);
    fixTime(t);
    return t;
  }

  function fixTime(t) {
    var date = new Date(t.getAttribute("datetime"));
    if (isNaN(date.getTime())) return;
    t.title = absolute(date);
    t.textContent = relative(date);
  }

  function fixTimes(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("time[datetime]"), fixTime);
  }

  function badge(state) { return h("span", {"class": "badge badge-" + state}, state); }

  function snippet(text, n) {
    if (!text) return h("span", {"class": "muted"}, "\u2014");
    return h("code", {"class": "snip", title: truncate(text, 2000)}, truncate(text, n));
  }

  // A task's page, or with an action its form action: the queue and id go in the query, percent-encoded,
  // since ids may hold "/" or be "." or "..", which a path cannot carry (see framework_admin.urls).
  function taskUrl(queue, id, action) {
    return ADMIN + "/task" + (action ? "/" + action : "") + "?queue=" + q(queue) + "&id=" + q(id);
  }

  // The task's type, or a word saying its stored message cannot be decoded.
  function taskLabel(task) {
    return task.decode_error ? [badge("undecodable"), " message"] : task.type;
  }

  function taskError(task, n) {
    return snippet(task.decode_error ? "cannot decode the message: " + task.decode_error : task.error, n);
  }

  function here() { return location.pathname + location.search; }

  function actionForm(url, label, next, confirmText, kind) {
    var form = h("form", {method: "post", action: url, "class": "inline", "data-confirm": confirmText || null}, [
      h("input", {type: "hidden", name: "_csrf", value: CSRF}),
      h("input", {type: "hidden", name: "next", value: next}),
      h("button", {type: "submit", "class": "btn " + (kind || "")}, label)
    ]);
    return form;
  }

  // The action forms of a task; they come back to `next`, but Delete to `gone` when given.
  function taskActions(task, next, gone) {
    if (!CAN_ACT) return null;
    var box = h("div", {"class": "actions", "data-actions-for": task.id});
    var st = task.state;
    if (st === "active") {
      box.appendChild(actionForm(taskUrl(task.queue, task.id, "cancel"), "Cancel", next, "Ask the worker to stop task " + task.id + "?", "warn"));
      return box;
    }
    if (["scheduled", "retry", "archived", "completed", "aggregating"].indexOf(st) >= 0) {
      box.appendChild(actionForm(taskUrl(task.queue, task.id, "run"), st === "retry" || st === "archived" ? "Retry now" : "Run now", next, "", "primary"));
    }
    if (["pending", "scheduled", "retry", "completed", "aggregating"].indexOf(st) >= 0) {
      box.appendChild(actionForm(taskUrl(task.queue, task.id, "archive"), "Archive", next,
        "Archive task " + task.id + "? It will not run again unless retried.", ""));
    }
    box.appendChild(actionForm(taskUrl(task.queue, task.id, "delete"), "Delete", gone || next, "Delete task " + task.id + " for good?", "danger"));
    return box;
  }

  function taskTime(task) {
    if (task.state === "scheduled" || task.state === "retry") return when(task.next_process_at);
    if (task.state === "completed") return when(task.completed_at);
    if (task.state === "archived") return when(task.last_failed_at);
    return when(task.pending_since);
  }

  function td(label, children) { return h("td", {"data-label": label}, children); }

  function emptyRow(cols, text) {
    return h("tr", {"class": "empty"}, h("td", {colspan: cols, "class": "muted"}, text));
  }

  function fill(tbody, rows, cols, emptyText) {
    if (!tbody) return;
    tbody.replaceChildren.apply(tbody, rows.length ? rows : [emptyRow(cols, emptyText)]);
  }

  // -- data ------------------------------------------------------------------------------------

  function getJSON(path) {
    return fetch(API + path, {credentials: "same-origin", headers: {Accept: "application/json"}}).then(function (r) {
      if (r.status === 401) {
        location.href = ADMIN + "/login?next_path=" + q(here());
        throw new Error("signed out");
      }
      if (!r.ok) {
        var err = new Error("HTTP " + r.status);
        err.status = r.status;
        throw err;
      }
      return r.json();
    });
  }

  var seen = {};

  function changed(key, data) {
    var text = JSON.stringify(data);
    if (seen[key] === text) return false;
    seen[key] = text;
    return true;
  }

  // -- overview --------------------------------------------------------------------------------

  function renderTotals(stats) {
    Array.prototype.forEach.call(document.querySelectorAll("[data-total]"), function (el) {
      var v = stats.totals[el.getAttribute("data-total")];
      if (v !== undefined) el.textContent = String(v);
    });
  }

  function queueBar(info) {
    var total = STATES.reduce(function (n, st) { return n + info[st]; }, 0);
    var bar = h("div", {"class": "qbar", title: STATES.map(function (st) { return st + " " + info[st]; }).join(", ")});
    var colors = {pending: "#6366f1", active: "#2563eb", scheduled: "#a5b4fc", retry: "#f59e0b", archived: "#dc2626", completed: "#10b981"};
    if (total) {
      STATES.forEach(function (st) {
        if (!info[st]) return;
        var part = h("span", {"class": "bar-" + st});
        part.style.width = (100 * info[st] / total).toFixed(2) + "%";
        part.style.background = colors[st];
        bar.appendChild(part);
      });
    }
    return bar;
  }

  function queueCard(info) {
    var name = info.queue;
    var counts = h("dl", {"class": "counts"}, STATES.map(function (st) {
      return h("div", {"class": "c-" + st}, [
        h("dt", null, h("a", {href: ADMIN + "/jobs/" + st + "?queue=" + q(name)}, st === "archived" ? "failed" : st)),
        h("dd", {"data-field": st}, String(info[st]))
      ]);
    }));
    var foot = h("footer", null, h("span", {"class": "muted small"},
      "today " + info.processed_today + " processed \u00b7 " + info.failed_today + " failed"));
    if (CAN_ACT) {
      var url = queueUrl(name, info.paused ? "unpause" : "pause");
      foot.appendChild(info.paused ? actionForm(url, "Resume", here(), "", "small")
        : actionForm(url, "Pause", here(), "Pause queue " + name + "? Workers stop taking its tasks.", "small"));
    }
    return h("article", {"class": "qcard" + (info.paused ? " paused" : ""), "data-queue": name}, [
      h("header", null, [
        h("a", {"class": "qname", href: queueUrl(name)}, name),
        info.paused ? h("span", {"class": "badge badge-paused"}, "paused") : null
      ]),
      h("p", {"class": "qsize"}, [
        h("span", {"class": "num", "data-field": "size"}, String(info.size)), " tasks \u00b7 latency ",
        h("span", {"data-field": "latency"}, info.latency === null ? "\u2014" : duration(info.latency))
      ]),
      queueBar(info), counts, foot
    ]);
  }

  function renderQueues(stats) {
    var box = document.getElementById("queues");
    if (!box) return;
    var cards = stats.queues.map(queueCard);
    if (!cards.length) cards = [h("p", {"class": "muted empty"}, "No queues yet: enqueue a task and it shows up here.")];
    box.replaceChildren.apply(box, cards);
  }

  function niceMax(v) {
    if (v <= 4) return 4;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  function hhmm(date) { return pad(date.getHours()) + ":" + pad(date.getMinutes()); }

  var lastChart = null;

  function renderChart(tp) {
    var chart = document.getElementById("chart");
    if (!chart) return;
    lastChart = tp;
    var H = chart.clientHeight || 200, L = 36, R = 6, T = 10, B = 22;
    var W = Math.max(240, Math.round(chart.clientWidth || 720));
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    var pts = tp.points, n = pts.length || 1;
    var max = niceMax(Math.max.apply(null, [0].concat(pts.map(function (p) { return p.processed; }))));
    var iw = W - L - R, ih = H - T - B, step = iw / n;
    var y = function (v) { return T + ih - (v / max) * ih; };
    var nodes = [];
    [0, max / 2, max].forEach(function (v) {
      nodes.push(s("line", {"class": "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v)}));
      nodes.push(s("text", {"class": "axis-label", x: L - 4, y: y(v) + 3, "text-anchor": "end"}, String(Math.round(v * 10) / 10)));
    });
    var labels = Math.max(2, Math.floor(iw / 90));
    var every = Math.max(5, Math.ceil(n / labels / 5) * 5);
    pts.forEach(function (p, i) {
      var x = L + i * step;
      var minute = new Date(p.minute);
      if (i % every === 0) {
        nodes.push(s("text", {"class": "axis-label", x: x, y: H - 6}, hhmm(minute)));
      }
      if (n <= 240) {
        var label = hhmm(minute) + " \u2014 " + p.processed + " processed, " + p.failed + " failed";
        var w = Math.max(1, step - 1);
        if (p.processed > 0) {
          nodes.push(s("rect", {"class": "bar-processed", x: x, y: y(p.processed), width: w, height: ih + T - y(p.processed),
            "data-minute": p.minute, "data-processed": p.processed, "data-failed": p.failed}, s("title", null, label)));
        }
        if (p.failed > 0) {
          nodes.push(s("rect", {"class": "bar-failed", x: x, y: y(p.failed), width: w, height: ih + T - y(p.failed),
            "data-minute": p.minute}, s("title", null, label)));
        }
      }
    });
    if (n > 240) {
      var line = function (key) {
        return pts.map(function (p, i) { return (L + (i + 0.5) * step).toFixed(1) + "," + y(p[key]).toFixed(1); }).join(" ");
      };
      nodes.push(s("polygon", {"class": "area-processed", points: L + "," + y(0) + " " + line("processed") + " " + (W - R) + "," + y(0)}));
      nodes.push(s("polyline", {"class": "line-processed", points: line("processed")}));
      nodes.push(s("polyline", {"class": "line-failed", points: line("failed")}));
    }
    chart.replaceChildren.apply(chart, nodes);
    chart.setAttribute("data-processed", tp.processed);
    chart.setAttribute("data-failed", tp.failed);
    chart.setAttribute("data-max", max);
    var a = document.getElementById("chart-processed"), b = document.getElementById("chart-failed");
    if (a) a.textContent = String(tp.processed);
    if (b) b.textContent = String(tp.failed);
  }

  function renderRuns(runs) {
    var tbody = document.querySelector("#runs tbody");
    fill(tbody, runs.map(function (r) {
      return h("tr", {"data-id": r.id, "data-status": r.status}, [
        td("Status", badge(r.status)),
        td("Task", [h("a", {href: taskUrl(r.queue, r.id)}, r.type || "(unknown type)"), h("br"), h("code", {"class": "id"}, r.id),
          r.error ? [h("br"), h("code", {"class": "snip err"}, truncate(r.error, 160))] : null]),
        td("Queue", r.queue),
        td("Duration", duration(r.duration)),
        td("When", when(r.finished_at || r.started_at))
      ]);
    }), 5, "No runs yet.");
  }

  function failedRow(task) {
    return h("tr", {"data-id": task.id, "data-state": task.state}, [
      td("Task", [badge(task.state === "archived" ? "failed" : task.state), " ",
        h("a", {href: taskUrl(task.queue, task.id)}, taskLabel(task)), h("br"), h("code", {"class": "id"}, task.id), " ",
        h("span", {"class": "muted small"}, task.queue)]),
      td("Payload", snippet(task.payload_text, 80)),
      td("Error", taskError(task, 120)),
      td("Retries", task.retried + "/" + task.max_retry),
      td("When", taskTime(task)),
      td("", taskActions(task, here()))
    ]);
  }

  function renderFailed(retry, archived) {
    fill(document.querySelector("#failed tbody"), retry.tasks.concat(archived.tasks).map(failedRow), 6, "No failed tasks.");
  }

  function renderServers(servers) {
    fill(document.querySelector("#servers tbody"), servers.map(function (sv) {
      var queues = Object.keys(sv.queues).sort().map(function (k) { return k + "=" + sv.queues[k]; }).join(", ");
      var running = sv.tasks.length ? sv.tasks.map(function (w) {
        return h("div", null, [h("a", {href: taskUrl(w.queue, w.task_id)}, w.type), " ",
          h("span", {"class": "muted small"}, duration(w.elapsed))]);
      }) : h("span", {"class": "muted"}, "idle");
      return h("tr", {"data-server": sv.server_id}, [
        td("Server", [sv.host + ":" + sv.pid, h("br"), h("span", {"class": "muted small"}, queues)]),
        td("Status", badge(sv.status)),
        td("Busy", sv.active + "/" + sv.concurrency),
        td("Running", running)
      ]);
    }), 4, "No worker is running.");
  }

  function renderCron(entries) {
    fill(document.querySelector("#cron tbody"), entries.map(function (e) {
      return h("tr", {"data-entry": e.id}, [
        td("Task", [e.task_type, h("br"), snippet(e.payload_text, 60)]), td("Spec", h("code", null, e.spec)),
        td("Last run", when(e.last_run)), td("Next run", when(e.next_run))
      ]);
    }), 4, "No scheduler is running.");
  }

  function refreshOverview() {
    return Promise.all([
      getJSON("/jobs/stats"),
      getJSON("/throughput?hours=" + CHART_HOURS),
      getJSON("/runs?limit=15"),
      getJSON("/jobs/retry?page_size=10"),
      getJSON("/jobs/archived?page_size=10&newest=true"),
      getJSON("/servers"),
      getJSON("/cron?history=0")
    ]).then(function (r) {
      if (changed("stats", r[0])) { renderTotals(r[0]); renderQueues(r[0]); }
      if (changed("chart", r[1])) renderChart(r[1]);
      if (changed("runs", r[2])) renderRuns(r[2]);
      if (changed("failed", [r[3], r[4]])) renderFailed(r[3], r[4]);
      if (changed("servers", r[5])) renderServers(r[5]);
      if (changed("cron", r[6])) renderCron(r[6]);
    });
  }

  // -- other pages -----------------------------------------------------------------------------

  function refreshJobs() {
    var params = "?page=" + q(D.pageNumber || "1") + "&page_size=" + q(D.pageSize || "25");
    if (D.queue) params += "&queue=" + q(D.queue);
    if (D.type) params += "&type=" + q(D.type);
    return getJSON("/jobs/" + q(D.status) + params).then(function (listing) {
      if (!changed("jobs", listing)) return;
      var total = document.querySelector('#jobs-count [data-field="total"]');
      if (total) total.textContent = String(listing.total);
      fill(document.querySelector("#tasks tbody"), listing.tasks.map(function (task) {
        return h("tr", {"data-id": task.id, "data-state": task.state}, [
          td("Task", [h("a", {href: taskUrl(task.queue, task.id)}, taskLabel(task)), h("br"), h("code", {"class": "id"}, task.id)]),
          td("Queue", task.queue),
          td("Payload", snippet(task.payload_text, 100)),
          td("Error", taskError(task, 120)),
          td("Retries", task.retried + "/" + task.max_retry),
          td("When", taskTime(task)),
          td("", taskActions(task, here()))
        ]);
      }), 7, "No " + (listing.state === "archived" ? "failed" : listing.state) + " tasks.");
    });
  }

  function percent(p) {
    return Math.floor(p.fraction * 100) + "%";
  }

  function showProgress(p) {
    var box = document.getElementById("task-progress");
    if (!box) return;
    box.hidden = !p;
    if (!p) return;
    document.getElementById("task-progress-bar").value = p.fraction;
    document.getElementById("task-progress-percent").textContent = percent(p);
    document.getElementById("task-progress-message").textContent = p.message;
    document.getElementById("task-progress-meta").replaceChildren(
      "attempt " + p.attempt + (p.ended ? " \u00b7 ended" : "") + " \u00b7 ", when(p.updated_at));
  }

  function progressCell(p) {
    if (!p) return "\u2014";
    return h("span", {"class": "progress", title: p.message}, [
      h("progress", {max: "1", value: String(p.fraction)}), " " + percent(p) + (p.message ? " " + p.message : "")
    ]);
  }

  function refreshTask() {
    return getJSON("/task?id=" + q(D.task) + "&queue=" + q(D.queue)).then(function (task) {
      if (!changed("task", task)) return;
      var state = document.getElementById("task-state");
      if (state) { state.setAttribute("data-state", task.state); state.replaceChildren(badge(task.state)); }
      var retries = document.getElementById("task-retries");
      if (retries) retries.textContent = task.retried + " of " + task.max_retry;
      var error = document.getElementById("task-error");
      if (error) error.textContent = task.error || "\u2014";
      showProgress(task.progress);
      var acts = document.getElementById("task-actions");
      var gone = ADMIN + "/jobs/" + task.state + "?queue=" + q(task.queue);  // the task page is gone after Delete
      if (acts) acts.replaceChildren.apply(acts, [taskActions(task, here(), gone)].filter(Boolean));
    }, function (err) {
      if (err.status !== 404) throw err;
      var state = document.getElementById("task-state");
      if (state) { state.setAttribute("data-state", "gone"); state.replaceChildren(badge("deleted")); }
      var acts = document.getElementById("task-actions");
      if (acts) acts.replaceChildren();
    });
  }

  function refreshQueue() {
    return getJSON("/queue?queue=" + q(D.queue)).then(function (detail) {
      var info = detail.queue;
      Array.prototype.forEach.call(document.querySelectorAll("[data-field]"), function (el) {
        var key = el.getAttribute("data-field");
        if (key === "latency") el.textContent = info.latency === null ? "\u2014" : duration(info.latency);
        else if (info[key] !== undefined) el.textContent = String(info[key]);
      });
    });
  }

  function serverCard(sv) {
    var queues = Object.keys(sv.queues).sort().map(function (k) { return k + "=" + sv.queues[k]; }).join(", ");
    var rows = sv.tasks.map(function (w) {
      return h("tr", {"data-id": w.task_id}, [
        td("Task", [h("a", {href: taskUrl(w.queue, w.task_id)}, w.type), h("br"), h("code", {"class": "id"}, w.task_id)]),
        td("Queue", w.queue),
        td("Payload", snippet(w.payload_text, 100)),
        td("Progress", progressCell(w.progress)),
        td("Running for", duration(w.elapsed)),
        td("Deadline", when(w.deadline))
      ]);
    });
    var tbody = h("tbody");
    fill(tbody, rows, 6, "Idle.");
    return h("section", {"class": "card", "data-server": sv.server_id}, [
      h("div", {"class": "card-head"}, [
        h("h2", null, [sv.host + ":" + sv.pid + " ", badge(sv.status)]),
        h("p", {"class": "muted small"}, ["id " + sv.server_id + " \u00b7 started ", when(sv.started_at),
          " \u00b7 " + sv.active + "/" + sv.concurrency + " busy \u00b7 queues " + queues + (sv.strict_priority ? " (strict)" : "")])
      ]),
      h("div", {"class": "table-wrap"}, h("table", {"class": "rows"}, [
        h("thead", null, h("tr", null, ["Task", "Queue", "Payload", "Progress", "Running for", "Deadline"].map(function (t) {
          return h("th", null, t);
        }))),
        tbody
      ]))
    ]);
  }

  function refreshServers() {
    return getJSON("/servers").then(function (servers) {
      var box = document.getElementById("server-list");
      if (!box || !changed("servers-page", servers)) return;
      var cards = servers.length ? servers.map(serverCard)
        : [h("p", {"class": "muted empty"}, "No worker is running.")];
      box.replaceChildren.apply(box, cards);
    });
  }

  // -- workflow ----------------------------------------------------------------------------------

  // Recolour the server-drawn graph: each box [data-node] takes its step's state, a collapsed column its
  // counts; the steps table, the status, the counts and the Cancel/Retry buttons follow.
  function refreshWorkflow() {
    return getJSON("/workflow/live?id=" + q(D.workflow) + "&queue=" + q(D.queue)).then(function (live) {
      if (!changed("workflow", live)) return;
      var s = live.summary;
      var status = document.getElementById("wf-status");
      if (status && status.getAttribute("data-status") !== s.status) {
        status.setAttribute("data-status", s.status);
        status.replaceChildren(badge(s.status));
      }
      var done = document.getElementById("wf-done");
      if (done) done.textContent = s.done + "/" + s.total;
      var counts = document.getElementById("wf-counts");
      if (counts) counts.textContent = Object.keys(live.counts).sort().map(function (k) { return live.counts[k] + " " + k; }).join(", ");
      var error = document.getElementById("wf-error");
      if (error) { error.textContent = s.error; error.hidden = !s.error; }
      var finished = document.getElementById("wf-finished");
      if (finished && s.finished) { finished.replaceChildren(when(s.finished)); }
      Array.prototype.forEach.call(document.querySelectorAll("#wf-graph [data-node]"), function (node) {
        var key = node.getAttribute("data-node");
        var group = live.groups[key];
        var state = group ? group.state : live.steps[key];
        if (!state) return;
        node.setAttribute("data-state", state);
        var sub = node.querySelector('[data-field="sub"]');
        if (sub) sub.textContent = group ? group.text : state;
      });
      Array.prototype.forEach.call(document.querySelectorAll("#wf-steps tr[data-step]"), function (row) {
        var state = live.steps[row.getAttribute("data-step")];
        var cell = row.querySelector('[data-field="state"]');
        if (state && cell && cell.textContent !== state) cell.replaceChildren(badge(state));
      });
      Array.prototype.forEach.call(document.querySelectorAll("[data-wf-action]"), function (el) {
        var action = el.getAttribute("data-wf-action");
        var allowed = action === "cancel" ? (s.status === "running" || s.status === "failed")
          : (s.status === "failed" || s.status === "cancelled");
        el.hidden = !allowed;
      });
    });
  }

  var pages = {
    overview: refreshOverview, jobs: refreshJobs, task: refreshTask, queue: refreshQueue, servers: refreshServers,
    workflow: refreshWorkflow
  };
  // a workflow's page follows its steps at least every second
  var EVERY = D.page === "workflow" && REFRESH > 0 ? Math.min(REFRESH, 1000) : REFRESH;

  // -- wiring ----------------------------------------------------------------------------------

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var text = form && form.getAttribute && form.getAttribute("data-confirm");
    if (text && !window.confirm(text)) ev.preventDefault();
  });

  var resizing = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizing);
    resizing = window.setTimeout(function () { if (lastChart) renderChart(lastChart); }, 150);
  });

  var toggle = document.querySelector(".menu-toggle");
  var nav = document.getElementById("nav");
  if (toggle && nav) {
    toggle.addEventListener("click", function () {
      var open = nav.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  var live = document.getElementById("live");

  function setLive(state, text) {
    if (!live) return;
    live.setAttribute("data-state", state);
    live.textContent = text;
  }

  function tick() {
    var refresh = pages[D.page];
    var done = function () { fixTimes(document); };
    if (!refresh || document.hidden) {
      done();
      schedule();
      return;
    }
    refresh().then(function () {
      setLive("ok", "live \u00b7 updated " + hhmm(new Date()) + ":" + pad(new Date().getSeconds()));
      body.setAttribute("data-refreshed", String(Date.now()));
    }, function (err) {
      setLive("error", "refresh failed: " + err.message);
    }).then(function () { done(); schedule(); });
  }

  function schedule() {
    if (EVERY > 0) window.setTimeout(tick, EVERY);
  }

  fixTimes(document);
  if (pages[D.page]) tick();
  else if (live) live.hidden = true;
})();
