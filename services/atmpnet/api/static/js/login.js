"use strict";
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const value = document.getElementById("token").value.trim();
  const err = document.getElementById("login-error");
  const res = await fetch("/api/v1/sites", { headers: { Authorization: "Bearer " + value } });
  await res.text();  // finish reading before navigating, or the browser reports the request aborted
  if (!res.ok) { err.hidden = false; err.textContent = "This token is not valid."; return; }
  atmp.setToken(value);
  location.assign("/overview");
});
