// Applies a remembered light/dark choice before the first paint (loaded synchronously from <head>).
try {
  const theme = localStorage.getItem("berth.theme");
  if (theme === "light" || theme === "dark") document.documentElement.setAttribute("data-theme", theme);
} catch {
  // storage disabled: the system's choice applies
}
