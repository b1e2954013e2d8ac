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
