// Skiff dashboard: sortable tables, confirmed promote/rollback, refresh while a job runs.
// Plain browser APIs only; nothing is downloaded at run time.
"use strict";

const body = document.body;

function sortTable(header) {
  const table = header.closest("table");
  const column = Array.from(header.parentNode.children).indexOf(header);
  const numeric = header.dataset.sort === "number";
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const value = (row) => {
    const cell = row.children[column];
    const raw = cell.dataset.value ?? cell.textContent.trim();
    if (!numeric) return raw;
    const number = parseFloat(raw);
    return Number.isNaN(number) ? -Infinity : number;
  };
  const rows = Array.from(table.tBodies[0].rows);
  rows.sort((a, b) => {
    const [x, y] = [value(a), value(b)];
    const order = numeric ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
    return ascending ? order : -order;
  });
  rows.forEach((row) => table.tBodies[0].appendChild(row));
  sessionStorage.setItem("skiff-sort:" + table.id, JSON.stringify({ column, ascending }));
}

function restoreSort() {
  document.querySelectorAll("table.sortable").forEach((table) => {
    const saved = JSON.parse(sessionStorage.getItem("skiff-sort:" + table.id) || "null");
    if (!saved) return;
    const header = table.tHead.rows[0].children[saved.column];
    header.setAttribute("aria-sort", saved.ascending ? "descending" : "ascending");
    sortTable(header);
  });
}

function showOutcome(text, failed) {
  const outcome = document.getElementById("outcome");
  outcome.textContent = text;
  outcome.classList.toggle("error", failed);
  outcome.hidden = false;
}

async function refreshMain() {
  const response = await fetch(location.href, { headers: { Accept: "text/html" } });
  if (!response.ok) return false;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  document.querySelector("main").replaceWith(fresh.querySelector("main"));
  body.toggleAttribute("data-live", fresh.body.hasAttribute("data-live"));
  restoreSort();
  return true;
}

async function change(button, reason) {
  const url = button.dataset.action === "promote"
    ? `/api/versions/${encodeURIComponent(button.dataset.version)}/promote`
    : "/api/rollback";
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", [body.dataset.tokenHeader]: body.dataset.token },
    body: JSON.stringify(reason ? { reason } : {}),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    showOutcome(answer.error ? answer.error.message : `HTTP ${response.status}`, true);
    return;
  }
  showOutcome(`production is now ${answer.version} (was ${answer.previous_version || "none"})`, false);
  await refreshMain();
}

function confirmChange(button) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-question").textContent = button.dataset.question;
  document.getElementById("confirm-reason").value = "";
  dialog.onclose = () => {
    if (dialog.returnValue === "confirm") change(button, document.getElementById("confirm-reason").value.trim());
  };
  dialog.showModal();
}

document.addEventListener("click", (event) => {
  const header = event.target.closest("th[data-sort]");
  if (header) sortTable(header);
  const button = event.target.closest("button[data-action]");
  if (button) confirmChange(button);
});

function poll() {
  const seconds = parseFloat(body.dataset.refresh) || 3;
  setTimeout(async () => {
    if (body.hasAttribute("data-live") && !document.getElementById("confirm").open) {
      await refreshMain().catch(() => false);
    }
    poll();
  }, seconds * 1000);
}

restoreSort();
poll();
