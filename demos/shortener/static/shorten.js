// The form of the shortener: POST /api/shorten {url}, then show the short URL
// and the link to its live map.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const form = $("shorten-form");
  const input = $("url");
  const button = $("shorten");
  const error = $("error");
  const result = $("result");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      const reply = await fetch("/api/shorten", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ url: input.value }),
      });
      let data = null;
      try {
        data = await reply.json();
      } catch (_) {
        // not JSON: reported below from the status
      }
      if (!reply.ok) {
        error.textContent = (data && data.error) || `the server answered ${reply.status}`;
        result.hidden = true;
        return;
      }
      $("short-url").textContent = data.short_url;
      $("short-url").href = data.short_url;
      $("target").textContent = data.url;
      $("monitor-link").href = `/m/${data.code}`;
      result.hidden = false;
      result.dataset.code = data.code;
    } catch (err) {
      error.textContent = `cannot reach the server: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });

  $("copy").addEventListener("click", () => {
    const text = $("short-url").textContent;
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
  });
})();
