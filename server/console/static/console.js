// The console's one script: the report's absolute/relative uplift toggle and its refresh
// while the experiment runs. Without JavaScript both columns show and the page stays still.
const button = document.getElementById("uplift-toggle");
const table = document.getElementById("variants");
if (button && table) {
  button.hidden = false;
  button.addEventListener("click", () => {
    const relative = table.classList.toggle("only-relative");
    button.setAttribute("aria-pressed", String(relative));
    button.textContent = relative ? "Show only the absolute uplift" : "Show only the relative uplift";
    table.classList.toggle("only-absolute", !relative);
  });
  table.classList.add("only-absolute");
}

// Reload a running experiment's report every minute, unless the reader turned it off (a
// choice kept for the browser tab, so that reading a table is never interrupted against
// one's will).
const refresh = document.getElementById("auto-refresh");
if (refresh) {
  refresh.closest(".refresh").hidden = false;
  refresh.checked = sessionStorage.getItem("centric-refresh") !== "off";
  refresh.addEventListener("change", () => {
    sessionStorage.setItem("centric-refresh", refresh.checked ? "on" : "off");
  });
  setInterval(() => { if (refresh.checked) location.reload(); }, 60_000);
}

// The editor's JSON fields say as you type whether they parse (the server checks again
// and has the last word; its messages appear next to the fields after saving).
for (const area of document.querySelectorAll("textarea[data-json]")) {
  const status = area.nextElementSibling;
  const check = () => {
    if (!area.value.trim()) { status.textContent = ""; area.removeAttribute("aria-invalid"); return; }
    try {
      JSON.parse(area.value);
      status.textContent = "valid JSON";
      status.className = "json-status ok";
      area.removeAttribute("aria-invalid");
    } catch (error) {
      status.textContent = `invalid JSON: ${error.message}`;
      status.className = "json-status field-error";
      area.setAttribute("aria-invalid", "true");
    }
  };
  area.addEventListener("input", check);
}
