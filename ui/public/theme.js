// Applies a remembered light/dark choice before the first paint (loaded synchronously from <head>).
try {
  var t = localStorage.getItem("berth.theme");
  if (t === "light" || t === "dark") document.documentElement.setAttribute("data-theme", t);
} catch (e) {}
