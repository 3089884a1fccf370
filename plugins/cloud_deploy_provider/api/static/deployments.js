// The Deployments pages: read the plugin's JSON, render, act. The page runs in the Airflow UI's sandboxed iframe,
// where confirm(), popups and top navigation are blocked: confirmations are in the page, and links to the service
// or to Airflow's own pages open through window.parent (same origin).
"use strict";

const root = document.body.dataset.root;             // the plugin app, e.g. /cloud_deploy
const airflowBase = root.replace(/\/cloud_deploy$/, ""); // the Airflow UI the app is mounted in
const IN_PROGRESS = new Set(["started", "building", "preparing", "stopping"]);
const ACTIVE = new Set(["started", "building", "preparing", "running"]);
const framed = window.parent !== window;

async function api(path, options = {}) {
  const response = await fetch(root + path, {credentials: "same-origin", ...options,
    headers: {"Accept": "application/json", "Content-Type": "application/json", ...(options.headers || {})}});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

function openService(url) {
  (framed ? window.parent : window).open(url, "_blank");
}

function openInAirflow(path) {
  if (framed) window.parent.open(airflowBase + path, "_self"); else window.location.assign(airflowBase + path);
}

function airflowLink(text, path, attributes = {}) {
  return element("a", {href: airflowBase + path, ...attributes,
    onclick: (event) => { event.preventDefault(); openInAirflow(path); }}, text);
}

const runPath = (dagId, runId) => `/dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(runId)}`;
const taskPath = (dagId, runId, taskId) => `${runPath(dagId, runId)}/tasks/${encodeURIComponent(taskId)}`;
const statusBadge = (word) => element("span", {class: `status status-${word}`}, word);
// The digest when the image was pushed; on the local engine (no registry) the tag of its build key.
const shortImage = (image) => !image ? "" : image.digest ? image.digest.replace("sha256:", "").slice(0, 12)
  : (image.reference || "").split(":").pop();

function serviceLink(url) {
  if (!url) return element("span", {class: "muted"}, "–");
  return element("a", {href: url, class: "service-url", onclick: (event) => { event.preventDefault(); openService(url); }},
                 url);
}

function notice(text, error = false) {
  const box = document.getElementById("notice");
  box.replaceChildren(text ? element("div", {class: error ? "notice error" : "notice"}, text) : "");
}

// An action button that asks in the page before it acts (confirm() returns false at once in the iframe).
function actionButton(project, action, after) {
  const label = action === "stop" ? "Stop" : "Deploy";
  const holder = element("span", {class: "action"});
  const ask = () => holder.replaceChildren(element("span", {class: "confirm"},
    `${label} ${project.user_id}/${project.project_id}?`,
    element("button", {class: `confirm-yes ${action === "stop" ? "danger" : "primary"}`, onclick: act}, `Yes, ${label.toLowerCase()}`),
    element("button", {class: "confirm-no", onclick: reset}, "Cancel")));
  const reset = () => holder.replaceChildren(element("button", {
    class: `action-${action} ${action === "stop" ? "danger" : "primary"}`, onclick: ask}, label));
  async function act() {
    try {
      const done = await api(`/ui/api/deployments/${encodeURIComponent(project.user_id)}/${encodeURIComponent(project.project_id)}/${action}`,
                             {method: "POST", body: JSON.stringify({confirm: true})});
      notice(`${label} ${project.user_id}/${project.project_id}: ${done.status}`);
    } catch (error) {
      notice(`${label} ${project.user_id}/${project.project_id} refused: ${error.message}`, true);
    }
    reset();
    after();
  }
  reset();
  return holder;
}

function actionsFor(row, after) {
  const buttons = [];
  if (!ACTIVE.has(row.status) && row.status !== "stopping") buttons.push(actionButton(row, "deploy", after));
  if (row.status !== "stopped" && row.status !== "stopping") buttons.push(actionButton(row, "stop", after));
  return buttons;
}

function updatedOf(row) {
  const times = [row.last_deploy, row.last_stop].filter(Boolean)
    .flatMap((run) => [run.ended_at, run.started_at, run.queued_at]).filter(Boolean).sort();
  return times.length ? new Date(times[times.length - 1]).toLocaleString() : "";
}

// ------------------------------------------------------------------ the list

let refreshTimer = null;
const knownTargets = new Set();

async function loadList() {
  clearTimeout(refreshTimer);
  const query = new URLSearchParams({limit: "1000"});
  for (const [name, id] of [["user_id", "filter-user"], ["status", "filter-status"], ["target", "filter-target"]]) {
    const value = document.getElementById(id).value.trim();
    if (value) query.set(name, value);
  }
  let page;
  try {
    page = await api(`/deployments?${query}`);
  } catch (error) {
    notice(`The deployments could not be read: ${error.message}`, true);
    refreshTimer = setTimeout(loadList, 5000);
    return;
  }
  const rows = page.deployments;
  document.querySelector("#deployments tbody").replaceChildren(...rows.map((row) => element("tr",
    {"data-project": `${row.user_id}/${row.project_id}`, "data-status": row.status},
    element("td", {}, row.user_id),
    element("td", {}, element("a", {class: "detail",
      href: `${root}/ui/deployments/${encodeURIComponent(row.user_id)}/${encodeURIComponent(row.project_id)}`}, row.project_id)),
    element("td", {}, row.target_type || ""),
    element("td", {title: row.message || ""}, statusBadge(row.status)),
    element("td", {}, serviceLink(row.url)),
    element("td", {class: "mono", title: row.image ? row.image.reference : ""}, shortImage(row.image)),
    element("td", {}, row.last_deploy ? airflowLink(row.last_deploy.state, runPath("cloud_deploy", row.last_deploy.run_id),
                                                    {class: "deploy-run"}) : ""),
    element("td", {}, row.last_stop ? airflowLink(row.last_stop.state, runPath("cloud_undeploy", row.last_stop.run_id),
                                                  {class: "stop-run"}) : ""),
    element("td", {class: "muted"}, updatedOf(row)),
    element("td", {}, actionsFor(row, loadList)))));
  for (const row of rows) if (row.target_type) knownTargets.add(row.target_type);
  const select = document.getElementById("filter-target");
  const chosen = select.value;
  select.replaceChildren(element("option", {value: ""}, "any"),
                         ...[...knownTargets].sort().map((type) => element("option", {value: type}, type)));
  select.value = chosen;
  const moving = rows.some((row) => IN_PROGRESS.has(row.status));
  document.getElementById("summary").textContent = `${page.total} deployment(s)${moving ? " · refreshing" : ""}`;
  refreshTimer = setTimeout(loadList, moving ? 2000 : 30000);
}

// ------------------------------------------------------------------ one deployment

async function loadDetail() {
  clearTimeout(refreshTimer);
  const project = window.cloudDeployProject;
  let found;
  try {
    found = await api(`/ui/api/deployments/${encodeURIComponent(project.user_id)}/${encodeURIComponent(project.project_id)}`);
  } catch (error) {
    notice(`This deployment could not be read: ${error.message}`, true);
    refreshTimer = setTimeout(loadDetail, 5000);
    return;
  }
  const status = document.getElementById("status");
  status.className = `status status-${found.status}`;
  status.textContent = found.status;
  document.getElementById("stage").textContent = found.stage || "";
  document.getElementById("target").textContent = found.target_type || "";
  document.getElementById("url").replaceChildren(serviceLink(found.url));
  document.getElementById("image").textContent = found.image ? `${found.image.reference || ""} ${found.image.digest || ""}` : "";
  document.getElementById("message").replaceChildren(element("pre", {class: "mono", id: "message-text"}, found.message || ""));
  document.getElementById("actions").replaceChildren(...actionsFor(found, loadDetail));
  document.querySelector("#stages tbody").replaceChildren(...Object.entries(found.stages).map(([stage, seconds]) =>
    element("tr", {}, element("td", {}, stage), element("td", {}, seconds.toFixed(2)))));
  document.querySelector("#runs tbody").replaceChildren(...found.runs.map((run) => element("tr", {},
    element("td", {}, run.dag_id),
    element("td", {}, airflowLink(run.run_id, runPath(run.dag_id, run.run_id))),
    element("td", {}, run.state),
    element("td", {}, run.tasks.map((task) => [airflowLink(`${task.task_id} (${task.state || "none"})`,
                                                           taskPath(run.dag_id, run.run_id, task.task_id),
                                                           {class: "task-log"}), " "])),
    element("td", {}, run.error || ""))));
  document.querySelector("#schedule tbody").replaceChildren(...(found.schedule.length ? found.schedule.map((item) =>
    element("tr", {}, element("td", {}, item.kind === "job" ? `job ${item.name} (${item.target})` : "redeploy"),
      element("td", {class: "mono"}, item.cron),
      element("td", {}, item.next_run ? new Date(item.next_run).toLocaleString() : (item.paused ? "paused" : "not planned yet")),
      element("td", {}, airflowLink(item.dag_id, `/dags/${encodeURIComponent(item.dag_id)}`))))
    : [element("tr", {}, element("td", {colspan: "4", class: "muted"}, "no schedule"))]));
  document.getElementById("resources").textContent = found.resources ? JSON.stringify(found.resources, null, 2) : "";
  document.getElementById("spec").textContent = found.spec_yaml || "";
  refreshTimer = setTimeout(loadDetail, IN_PROGRESS.has(found.status) ? 2000 : 30000);
}

if (window.cloudDeployPage === "list") {
  for (const id of ["filter-user", "filter-status", "filter-target"]) {
    document.getElementById(id).addEventListener(id === "filter-user" ? "input" : "change", loadList);
  }
  loadList();
} else {
  loadDetail();
}
